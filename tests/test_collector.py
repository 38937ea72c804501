"""collector: the SQLite store. Every test runs on its own temporary database file."""

import os
import random
import sqlite3
import stat
import threading

import pytest

from hindsight.collector import migrations
from hindsight.paths import data_dir, db_path
from hindsight.collector.store import Store, StoreError, percentile

AWS_KEY_ID = "AKIA" + "IOSFODNN7" + "EXAMPLE"
PEM_BODY = "MIIEowIBAAKCAQEA7bq98Wq1/example+key+material+0123456789abcdefghij"
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----"

SHIPPED = [name for name, _ in migrations.MIGRATIONS]  # the migrations in the code, in order


@pytest.fixture
def db_file(tmp_path, monkeypatch):
    path = tmp_path / "data" / "hindsight.db"
    monkeypatch.setenv("HINDSIGHT_DB", str(path))
    return path


@pytest.fixture
def store(db_file):
    s = Store()
    yield s
    s.close()


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def raw_rows(path, sql, params=()):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# -- paths and files ---------------------------------------------------------------------------------


def test_data_dir_and_db_path_follow_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HINDSIGHT_DATA_DIR", str(tmp_path / "a" / "b"))
    monkeypatch.delenv("HINDSIGHT_DB", raising=False)
    assert data_dir() == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir()
    assert mode(tmp_path / "a" / "b") == 0o700
    assert mode(tmp_path / "a") == 0o700
    assert db_path() == tmp_path / "a" / "b" / "hindsight.db"
    monkeypatch.setenv("HINDSIGHT_DB", str(tmp_path / "elsewhere.db"))
    assert db_path() == tmp_path / "elsewhere.db"


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_database_file_is_0600_in_a_0700_directory(db_file):
    old_umask = os.umask(0o022)  # a usual umask, which would give 0644 / 0755
    try:
        Store().close()
    finally:
        os.umask(old_umask)
    assert db_file.exists()
    assert mode(db_file) == 0o600
    assert mode(db_file.parent) == 0o700


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_existing_database_file_is_made_0600(tmp_path):
    path = tmp_path / "h.db"
    path.touch()
    os.chmod(path, 0o644)
    Store(path).close()
    assert mode(path) == 0o600


def test_wal_is_on(store, db_file):
    assert raw_rows(db_file, "PRAGMA journal_mode") == [("wal",)]


# -- migrations --------------------------------------------------------------------------------------


def applied_rows(path):
    return raw_rows(path, "SELECT name, applied_at FROM _hindsight_migrations ORDER BY rowid")


def test_migrations_apply_once(db_file):
    Store().close()
    first = applied_rows(db_file)
    assert [name for name, _ in first] == SHIPPED
    Store().close()
    assert applied_rows(db_file) == first  # same rows, same times: nothing re-applied
    tables = {name for (name,) in raw_rows(db_file, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"requests", "events", "_hindsight_migrations"} <= tables


def test_a_new_migration_is_applied_on_next_open_and_only_once(db_file, monkeypatch):
    s = Store()
    request_id = s.insert_request({"prompt": "x = 1"})
    s.close()
    calls = []

    def m999_dummy(db):
        calls.append(1)
        db.execute("ALTER TABLE requests ADD COLUMN dummy TEXT")

    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, ("m999_dummy", m999_dummy)])
    s = Store()
    s.update_request(request_id, dummy="new column")  # the store sees columns added by migrations
    assert s.get_request(request_id)["dummy"] == "new column"
    s.close()
    Store().close()
    assert calls == [1]
    assert [name for name, _ in applied_rows(db_file)] == [*SHIPPED, "m999_dummy"]


def test_a_failing_migration_is_rolled_back_whole(db_file, monkeypatch):
    Store().close()

    def m002_broken(db):
        db.execute("CREATE TABLE half_done (x)")
        db.execute("SELECT * FROM no_such_table")

    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, ("m002_broken", m002_broken)])
    with pytest.raises(StoreError, match="no such table"):
        Store()
    tables = {name for (name,) in raw_rows(db_file, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "half_done" not in tables
    assert [name for name, _ in applied_rows(db_file)] == SHIPPED


# -- requests ----------------------------------------------------------------------------------------


def test_insert_and_get_round_trip(store):
    request_id = store.insert_request(
        {
            "uri": "file:///w/a.py",
            "language": "python",
            "line": 3,
            "character": 7,
            "prompt": "def f():\n    return ",
            "context_json": [{"source": "bm25", "score": 1.5, "text": "def g(): pass"}],
            "timings_json": {"retrieval": 2.5, "generate": 40.0},
            "completion": "g()",
            "mode": "single",
            "source": "model",
            "decision": "show",
            "latency_ms": 42.5,
        }
    )
    assert len(request_id) == 16 and int(request_id, 16) >= 0
    row = store.get_request(request_id)
    assert row["context_json"] == [{"source": "bm25", "score": 1.5, "text": "def g(): pass"}]
    assert row["timings_json"] == {"retrieval": 2.5, "generate": 40.0}
    assert row["line"] == 3 and row["completion"] == "g()" and row["outcome"] is None
    assert row["created_at"] > 1e9
    assert store.get_request("nope") is None


def test_insert_keeps_a_given_id(store):
    assert store.insert_request({"id": "abc", "prompt": "p"}) == "abc"
    assert store.get_request("abc")["prompt"] == "p"


def test_unknown_columns_are_rejected(store):
    with pytest.raises(ValueError, match="no_such_column"):
        store.insert_request({"prompt": "x", "no_such_column": 1})
    request_id = store.insert_request({"prompt": "x"})
    with pytest.raises(ValueError, match="bogus"):
        store.update_request(request_id, bogus=1)
    assert store.query("SELECT count(*) AS n FROM requests") == [{"n": 1}]


def test_update_request(store):
    request_id = store.insert_request({"prompt": "x"})
    assert store.update_request(request_id, completion="y()", decision="show", timings_json={"a": 1.0})
    row = store.get_request(request_id)
    assert (row["completion"], row["decision"], row["timings_json"]) == ("y()", "show", {"a": 1.0})
    assert store.update_request("missing", completion="z") is False


def test_secrets_are_redacted_before_storage(store, db_file):
    prompt = f'AWS = "{AWS_KEY_ID}"\npassword = "hunter22"\n{PEM}\ndef main():\n'
    request_id = store.insert_request(
        {
            "prompt": prompt,
            "prefix": prompt,
            "suffix": "token: tok-secret-9",
            "context_json": [{"source": "defs", "score": 1.0, "text": f"KEY = '{AWS_KEY_ID}'"}],
            "completion": "db_password = 'hunter22'",
            "error": f"auth failed for {AWS_KEY_ID}",
        }
    )
    store.update_request(request_id, completion="secret = 'upd4ted-secret'")
    store.record_actual_text(request_id, "password = 'typed-pw-1'")
    store.add_event("didShow", request_id, {"text": f"k={AWS_KEY_ID}", "nested": [{"password": "ev-pw-22"}]})

    dump = "\n".join(str(row) for row in raw_rows(db_file, "SELECT * FROM requests"))
    dump += "\n".join(str(row) for row in raw_rows(db_file, "SELECT * FROM events"))
    for secret in [AWS_KEY_ID, "hunter22", PEM_BODY[:20], "tok-secret-9", "upd4ted-secret", "typed-pw-1", "ev-pw-22"]:
        assert secret not in dump
    (raw_prompt,) = raw_rows(db_file, "SELECT prompt FROM requests")[0]
    assert raw_prompt == (
        'AWS = "«redacted:aws_key»"\npassword = "«redacted:password»"\n«redacted:private_key»\ndef main():\n'
    )


def test_mark_shown_only_the_first_time(store):
    request_id = store.insert_request({"decision": "show"})
    assert store.mark_shown(request_id, at=100.0) is True
    assert store.mark_shown(request_id, at=200.0) is False
    assert store.get_request(request_id)["shown_at"] == 100.0


def test_record_actual_text_only_the_first_time(store):
    request_id = store.insert_request({"decision": "show"})
    assert store.record_actual_text(request_id, "first") is True
    assert store.record_actual_text(request_id, "second") is False
    row = store.get_request(request_id)
    assert row["actual_text"] == "first" and row["actual_text_at"] is not None


def test_record_persistence(store):
    request_id = store.insert_request({"decision": "show"})
    store.record_persistence(request_id, "30s", 1.0)
    store.record_persistence(request_id, "120s", 0.25)
    row = store.get_request(request_id)
    assert (row["persist_30s"], row["persist_120s"]) == (1.0, 0.25)
    with pytest.raises(ValueError):
        store.record_persistence(request_id, "60s", 0.5)


# -- outcomes ----------------------------------------------------------------------------------------

OUTCOMES = ["accepted", "partial", "rejected", "expired", "continued"]


def shown(store, **extra):
    return store.insert_request({"decision": "show", "completion": "abcdefgh", **extra})


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_no_outcome_takes_any_outcome(store, outcome):
    request_id = shown(store)
    assert store.set_outcome(request_id, outcome, reason="r", accepted_length=2, at=5.0) is True
    row = store.get_request(request_id)
    assert (row["outcome"], row["outcome_reason"], row["accepted_length"], row["outcome_at"]) == (outcome, "r", 2, 5.0)


def test_partial_then_accepted(store):
    request_id = shown(store)
    store.set_outcome(request_id, "partial", accepted_length=3)
    assert store.set_outcome(request_id, "accepted") is True
    row = store.get_request(request_id)
    assert row["outcome"] == "accepted"
    assert row["accepted_length"] == len("abcdefgh")  # accepted whole


def test_partial_grows_but_never_shrinks(store):
    request_id = shown(store)
    store.set_outcome(request_id, "partial", accepted_length=3, reason="word")
    assert store.set_outcome(request_id, "partial", accepted_length=5) is True
    assert store.get_request(request_id)["accepted_length"] == 5
    assert store.get_request(request_id)["outcome_reason"] == "word"
    assert store.set_outcome(request_id, "partial", accepted_length=4) is False
    assert store.set_outcome(request_id, "partial", accepted_length=5) is False
    assert store.set_outcome(request_id, "partial") is False
    assert store.get_request(request_id)["accepted_length"] == 5


@pytest.mark.parametrize("later", ["rejected", "expired", "continued"])
def test_partial_stays_partial(store, later):
    request_id = shown(store)
    store.set_outcome(request_id, "partial", accepted_length=3, at=1.0)
    assert store.set_outcome(request_id, later, reason="typed_over", at=2.0) is False
    row = store.get_request(request_id)
    assert (row["outcome"], row["accepted_length"], row["outcome_at"]) == ("partial", 3, 1.0)


@pytest.mark.parametrize("final", ["accepted", "rejected", "expired", "continued"])
@pytest.mark.parametrize("later", OUTCOMES)
def test_final_outcomes_are_final(store, final, later):
    request_id = shown(store)
    store.set_outcome(request_id, final, reason="first", accepted_length=8, at=1.0)
    before = store.get_request(request_id)
    assert store.set_outcome(request_id, later, reason="second", accepted_length=9, at=2.0) is False
    assert store.get_request(request_id) == before


def test_set_outcome_rejects_unknown_outcomes_and_ids(store):
    request_id = shown(store)
    with pytest.raises(ValueError):
        store.set_outcome(request_id, "liked")
    assert store.set_outcome("no-such-id", "accepted") is False
    assert store.get_request(request_id)["outcome"] is None


def test_expire_open(store):
    open_ = [shown(store), shown(store)]
    done = shown(store)
    store.set_outcome(done, "accepted")
    empty = store.insert_request({"decision": "empty"})
    assert store.expire_open() == 2
    assert [store.get_request(i)["outcome"] for i in open_] == ["expired", "expired"]
    assert store.get_request(done)["outcome"] == "accepted"
    assert store.get_request(empty)["outcome"] is None
    assert store.expire_open() == 0


# -- events ------------------------------------------------------------------------------------------


def test_events_are_appended_and_read_back(store):
    a = store.add_event("didShow", "r1", {"id": "r1"})
    b = store.add_event("didReject", "r1", {"id": "r1", "reason": "dismissed"})
    c = store.add_event("didChange", None, {"uri": "file:///x"})
    assert a < b < c
    assert [e["kind"] for e in store.events()] == ["didShow", "didReject", "didChange"]
    assert [e["payload"] for e in store.events("r1")] == [{"id": "r1"}, {"id": "r1", "reason": "dismissed"}]


def test_events_cannot_be_updated_or_deleted(store, db_file):
    store.add_event("didShow", "r1", {"id": "r1"})
    conn = sqlite3.connect(db_file)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE events SET kind = 'forged'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM events")
    finally:
        conn.close()
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store.db.execute("DELETE FROM events")
    assert [(e["kind"], e["request_id"]) for e in store.events()] == [("didShow", "r1")]


# -- broken files ------------------------------------------------------------------------------------


def test_random_bytes_are_not_a_hindsight_database(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(random.Random(0).randbytes(8192))
    with pytest.raises(StoreError) as info:
        Store(path)
    message = str(info.value)
    assert "\n" not in message
    assert message == f"database {path} is not a hindsight database (file is not a database)"


def test_a_damaged_database_is_reported_corrupt(tmp_path):
    path = tmp_path / "h.db"
    s = Store(path)
    s.insert_request({"prompt": "x"})
    s.close()
    data = bytearray(path.read_bytes())
    data[100:4096] = random.Random(1).randbytes(3996)  # the schema page, after the file header
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError) as info:
        Store(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"database {path} is corrupt: ")


def test_another_applications_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="is not a hindsight database"):
        Store(path)
    assert raw_rows(path, "SELECT name FROM sqlite_master WHERE type = 'table'") == [("notes",)]


# -- concurrency -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shared", [True, False], ids=["one-store", "store-per-thread"])
def test_concurrent_writers_lose_nothing(db_file, shared):
    """4 threads × 50 writes, each a read-then-write set_outcome plus an event. With one Store the
    lock serializes them; with a Store (connection) per thread, BEGIN IMMEDIATE does."""
    n_threads, n_writes = 4, 50
    setup = Store()
    own = [[shown(setup) for _ in range(n_writes)] for _ in range(n_threads)]
    common = shown(setup)
    stores = [setup] * n_threads if shared else [Store() for _ in range(n_threads)]
    errors = []
    changed = [0] * n_threads
    start = threading.Barrier(n_threads)

    def work(t):
        try:
            s = stores[t]
            start.wait()
            for i in range(n_writes):
                changed[t] += s.set_outcome(own[t][i], "rejected", reason=f"t{t}")
                s.set_outcome(common, "partial", accepted_length=i * n_threads + t + 1)
                s.add_event("write", own[t][i], {"thread": t, "i": i})
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    try:
        assert errors == []
        assert changed == [n_writes] * n_threads
        rows = setup.query(
            "SELECT outcome, outcome_reason, count(*) AS n FROM requests WHERE id != ? GROUP BY 1, 2", [common]
        )
        assert sorted((r["outcome"], r["outcome_reason"], r["n"]) for r in rows) == [
            ("rejected", f"t{t}", n_writes) for t in range(n_threads)
        ]
        assert setup.get_request(common)["accepted_length"] == n_threads * n_writes  # the largest won
        events = setup.events()
        assert len(events) == n_threads * n_writes
        assert {(e["payload"]["thread"], e["payload"]["i"]) for e in events} == {
            (t, i) for t in range(n_threads) for i in range(n_writes)
        }
    finally:
        for s in set(stores) | {setup}:
            s.close()


# -- stats -------------------------------------------------------------------------------------------


def test_percentile_nearest_rank():
    values = [35, 20, 15, 50, 40]
    assert percentile(values, 0) == 15
    assert percentile(values, 30) == 20
    assert percentile(values, 40) == 20
    assert percentile(values, 50) == 35
    assert percentile(values, 100) == 50
    assert percentile([], 50) is None
    assert percentile([None, 3.0], 50) == 3.0
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_stats_on_an_empty_database(store):
    assert store.stats() == {
        "requests": 0, "shown": 0, "accepted": 0, "partial": 0, "rejected": 0, "expired": 0,
        "continued": 0, "acceptance_rate": 0.0, "latency_p50_ms": None, "latency_p95_ms": None,
        "rejected_by_reason": {},
    }  # fmt: skip


def test_stats_on_known_rows(store):
    def add(decision, latency, outcome=None, reason=None, **extra):
        request_id = store.insert_request({"decision": decision, "latency_ms": latency, "completion": "x", **extra})
        if outcome:
            store.set_outcome(request_id, outcome, reason=reason, accepted_length=1 if outcome == "partial" else None)
        return request_id

    add("show", 10, "accepted")
    add("show", 20, "rejected", "typed_over")
    add("show", 30, "rejected", "dismissed")
    add("show", 40, "rejected", "typed_over")
    add("show", 50, "partial")
    parent = add("show", 60, "continued")
    add("show", 5, "accepted", source="typed_ahead", parent_id=parent)
    add("show", 70, "expired")
    add("show", 90)  # still open
    add("empty", 80)
    add("cancelled", 1000)  # not a latency anyone waited for
    add("error", None, error="model failed")

    assert store.stats() == {
        "requests": 12,
        "shown": 8,  # 9 shown, less the one continued through its typed-ahead child
        "accepted": 2,
        "partial": 1,
        "rejected": 3,
        "expired": 1,
        "continued": 1,
        "acceptance_rate": 0.25,
        "latency_p50_ms": 40.0,  # 5 10 20 30 [40] 50 60 70 80 90
        "latency_p95_ms": 90.0,
        "rejected_by_reason": {"typed_over": 2, "dismissed": 1},
    }
