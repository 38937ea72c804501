"""`hindsight forget`: the CLI, run as a process on a real database, deletes what was recorded (all, or
since a date) and leaves none of its text in the file or its WAL, even while a server is writing to it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lsprotocol import types

from hindsight.collector import migrations
from hindsight.collector.store import DATA_TABLES, Store
from conftest import ROOT, rows, serving

SECRET = "ZEBRA_QUARTZ_FORGET_ME"  # stands for the user's code: found byte for byte until it is forgotten
KEPT = "OTTER_BASALT_KEEP_ME"
NO_MODEL = {"model": "/nonexistent/hindsight-test-model.gguf", "context": {"crossFile": False}}


def forget(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hindsight", "forget", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def on_disk(path: Path, text: str) -> list[str]:
    """Which of the database's files hold `text`, byte for byte."""
    return [
        f.name for f in (path, Path(f"{path}-wal")) if f.exists() and text.encode() in f.read_bytes()
    ]


def record(store: Store, marker: str, n: int, created_at: float | None = None) -> list[str]:
    """n requests holding `marker` in every text column, each with an accept event and outcomes."""
    ids = []
    for i in range(n):
        rid = store.insert_request(
            {
                "created_at": created_at,
                "uri": f"file:///{marker}/m{i}.py",
                "prompt": f"def {marker}_{i}(x):\n    return ",
                "prefix": f"# {marker} prefix",
                "suffix": f"# {marker} suffix",
                "context_json": [{"source": "bm25", "text": f"{marker} context"}],
                "completion": f"{marker}(x) + {i}",
                "decision": "show",
            }
        )
        store.add_event("accept", rid, {"id": rid, "text": f"{marker} typed"})
        store.set_outcome(rid, "rejected", reason="typed_over")
        store.record_actual_text(rid, f"{marker} written instead")
        ids.append(rid)
    return ids


def test_every_table_that_holds_data_is_known_to_forget(tmp_path):
    with Store(tmp_path / "h.db") as store:
        tables = {t for t in store.db.table_names() if not t.startswith("sqlite_")}
        assert tables - {migrations.MIGRATIONS_TABLE} == set(DATA_TABLES)
        for table, column in DATA_TABLES.items():
            assert column in store.db[table].columns_dict


def test_forget_all_leaves_no_trace_in_the_file_or_its_wal(tmp_path):
    path = tmp_path / "h.db"
    server = Store(path)  # stays open, like a running server: its writes sit in the WAL, not checkpointed
    record(server, SECRET, 30)
    assert on_disk(path, SECRET)  # the test can fail: the text is there to find
    done = forget("--all", "--db", str(path), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["deleted"] == {"requests": 30, "events": 30, "learning_runs": 0}
    assert report["since"] is None and report["wal_truncated"] is True
    assert on_disk(path, SECRET) == []
    assert rows(path, "SELECT count(*) AS n FROM requests") == [{"n": 0}]
    # The open store goes on writing, and the events table is append-only again.
    after = server.add_event("show", None, {"id": "after"})
    assert [e["id"] for e in server.events()] == [after]
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        server.db.execute("DELETE FROM events")
    server.close()


def test_forget_since_keeps_what_came_before(tmp_path):
    path = tmp_path / "h.db"
    cutoff = time.time() - 3600
    with Store(path) as store:
        old = record(store, KEPT, 5, created_at=cutoff - 86400)
        new = record(store, SECRET, 7)
        # An event from before the cutoff about a request after it goes too; one about an old one stays.
        conn = sqlite3.connect(path)
        insert = "INSERT INTO events (ts, kind, request_id, payload) VALUES (?, ?, ?, ?)"
        conn.execute(insert, [cutoff - 10, "late", new[0], f'"{SECRET}"'])
        conn.execute(insert, [cutoff - 10, "early", old[0], "{}"])
        conn.commit()
        conn.close()
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cutoff))
    done = forget("--since", since, "--db", str(path))
    assert done.returncode == 0, done.stderr
    # 7 requests; their 7 events and the late one; and the 5 events recorded now about the old requests
    assert done.stdout.startswith(f"deleted 7 requests, 13 events, 0 learning_runs (since {since}) from {path}")
    assert on_disk(path, SECRET) == [] and on_disk(path, KEPT) == ["h.db"]
    assert {r["id"] for r in rows(path, "SELECT id FROM requests")} == set(old)
    assert rows(path, "SELECT kind, request_id FROM events") == [{"kind": "early", "request_id": old[0]}]


async def test_forget_while_a_server_is_recording(tmp_path):
    path = tmp_path / "live.db"
    async with serving({**NO_MODEL, "databasePath": str(path)}) as client:
        status = types.ExecuteCommandParams(command="hindsight.status")
        for i in range(20):
            client.protocol.notify("hindsight/didShow", {"id": f"{SECRET}-{i}"})
        await client.workspace_execute_command_async(status)
        assert on_disk(path, SECRET)
        done = forget("--all", "--db", str(path), "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["deleted"]["events"] == 20
        client.protocol.notify("hindsight/didShow", {"id": "after-forget"})
        await client.workspace_execute_command_async(status)
        assert not [m for m in client.messages if "not recording" in m.message]
    assert on_disk(path, SECRET) == []
    assert [r["request_id"] for r in rows(path, "SELECT request_id FROM events")] == ["after-forget"]


def test_forget_refuses_what_it_cannot_do(tmp_path):
    missing = forget("--all", "--db", str(tmp_path / "typo.db"))
    assert missing.returncode == 2 and missing.stderr.strip() == f"hindsight: no database at {tmp_path / 'typo.db'}"
    assert not (tmp_path / "typo.db").exists()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database " * 100)
    broken = forget("--all", "--db", str(junk))
    assert broken.returncode == 2 and broken.stderr.count("\n") == 1 and "not a hindsight database" in broken.stderr
    assert junk.read_bytes() == b"not a database " * 100  # forget never moves a file aside
    path = tmp_path / "h.db"
    Store(path).close()
    assert forget("--db", str(path)).returncode == 2  # neither --all nor --since: usage, nothing deleted
    bad_date = forget("--since", "last week", "--db", str(path))
    assert bad_date.returncode == 2 and "--since expects an ISO date" in bad_date.stderr
