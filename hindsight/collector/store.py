"""The SQLite store: every request, suggestion, outcome and raw client event.

One `Store` per process, shared by the server's event loop and its worker thread: a lock guards the
connection, and every write is one `BEGIN IMMEDIATE` transaction, so that writers in other processes
(a training job, a second editor) wait for the lock instead of failing with "database is locked" when a
read-then-write transaction tries to upgrade. The connection is in autocommit mode; `_write()` owns the
transactions, and writes are plain SQL (sqlite-utils' insert() would commit on its own, mid-transaction).
Migrations take `BEGIN IMMEDIATE` too (`migrations.migrate`). The writes outside such a transaction are
the `journal_mode = WAL` pragma (once, when the file is new) and `compact()`'s VACUUM, which SQLite cannot
run inside one; both take the lock themselves, waiting out the busy timeout like the rest.

Durability: WAL journal, `synchronous = NORMAL`, a 10 s busy timeout. In WAL mode NORMAL syncs the WAL
at each checkpoint, not at each commit: a process that crashes or is killed loses nothing it committed
(the WAL is in the operating system's cache), and the file is never corrupted, but a power loss or an
OS crash can lose the last transactions before it. That is the right trade for a log of suggestions:
FULL would add an fsync to every keystroke's write. Several processes may write one database at once.

On open, `PRAGMA quick_check` verifies the file (integrity_check without its index-content check). On a
100 MB database it costs 0.1-0.2 s when the file is in the page cache and 2-4 s when none of it is (after
a reboot; measured on a 2-core VM under load); see `Store._quick_check` for why it is not read ahead.
`open_store` is how the server opens it, and decides what happens when that fails:
- corrupt, or not a SQLite database at all: renamed, with its -wal and -shm, to
  `<name>.corrupt-<UTC time>` beside it (nothing is deleted), and a fresh database is started there;
- a SQLite database of another application (other tables, no migrations table): left alone, not
  recording: it may be someone's data, and it is not ours to move;
- unwritable (a read-only file system, an immutable file, a directory in the way, permissions): left
  alone, and recording goes to the default database (`$HINDSIGHT_DB` or the data directory's) instead,
  the one every offline command reads; if that is the unwritable one, or it fails too, not recording. A
  healthy but unwritable database is never renamed: it is not damaged, may be someone else's, and a
  rename would fail on a read-only file system anyway; fixing the permission brings it back as it was.
Each outcome comes back as one line for the user. A write that fails later (a full disk) raises
`StoreError` with `kind` FULL and leaves nothing half-written; the server reports it once, drops what it
could not record, and records again as soon as a write succeeds.

Every text that may hold the user's code or secrets goes through `redact` before it is written. The file
is the user's alone: created 0600 before SQLite opens it, in a 0700 directory. `forget()` deletes it all
(or everything since a date) and `compact()` leaves none of it in free pages or in the WAL.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlite_utils

from hindsight.collector import migrations
from hindsight.collector.reader import ACCEPTED, PARTIAL, REJECTED, SHOWN, SHOWN_ONCE
from hindsight.redact import redact, redact_obj
from hindsight.errors import HindsightError
from hindsight.paths import db_path, ensure_private_dir

OUTCOMES = frozenset({"accepted", "partial", "rejected", "expired", "continued"})
FINAL_OUTCOMES = frozenset({"accepted", "rejected", "expired", "continued"})
PERSISTENCE_SLOTS = {"30s": "persist_30s", "120s": "persist_120s"}
# Columns that may hold code, prose or secrets: redacted before they are written.
REDACTED_COLUMNS = frozenset(
    {"prompt", "prefix", "suffix", "context_json", "completion", "actual_text", "error"}
)


# What went wrong, for the caller to decide what to do (`open_store`, the server's disk-full message).
CORRUPT, FOREIGN, UNWRITABLE, FULL, BUSY, OTHER = "corrupt", "foreign", "unwritable", "full", "busy", "other"
_SQLITE_KINDS = {
    sqlite3.SQLITE_NOTADB: CORRUPT,
    sqlite3.SQLITE_CORRUPT: CORRUPT,
    sqlite3.SQLITE_FULL: FULL,
    sqlite3.SQLITE_READONLY: UNWRITABLE,
    sqlite3.SQLITE_CANTOPEN: UNWRITABLE,
    sqlite3.SQLITE_PERM: UNWRITABLE,
    sqlite3.SQLITE_BUSY: BUSY,
    sqlite3.SQLITE_LOCKED: BUSY,
}
# Every table that holds the user's data, and the column that says when a row was recorded: `forget`
# deletes from each. A migration that adds a table adds it here (tests/test_forget.py checks).
DATA_TABLES = {"requests": "created_at", "events": "ts", "learning_runs": "started_at"}


class StoreError(HindsightError):
    """The database cannot be used: not a hindsight database, corrupt, unreadable. One clear line.

    `kind`: CORRUPT, FOREIGN, UNWRITABLE, FULL, BUSY or OTHER."""

    def __init__(self, message: str, kind: str = OTHER):
        super().__init__(message, usage=kind in (CORRUPT, FOREIGN))  # a file that is not a usable log is refused
        self.kind = kind


def percentile(values: Iterable[float | None], q: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least q% of the values at or below it.

    `q` is in [0, 100]; None values are skipped; None when there is nothing left.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within [0, 100], got {q}")
    data = sorted(v for v in values if v is not None)
    if not data:
        return None
    rank = max(1, math.ceil(q * len(data) / 100))
    return data[rank - 1]


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return " ".join(text.split())


class Store:
    # The methods that write (each one `_write()` transaction): what the server guards against a full disk.
    WRITES = frozenset(
        {
            "insert_request",
            "update_request",
            "set_outcome",
            "mark_shown",
            "record_actual_text",
            "record_persistence",
            "expire_open",
            "add_event",
            "add_learning_run",
            "forget",
        }
    )

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path).expanduser() if path is not None else db_path()
        self._lock = threading.RLock()
        self._closed = False
        try:
            ensure_private_dir(self.path.parent)
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
            os.chmod(self.path, 0o600)  # an existing file too; O_CREAT's mode is filtered by the umask
        except OSError as e:
            kind = FULL if e.errno in (errno.ENOSPC, errno.EDQUOT) else UNWRITABLE
            raise StoreError(f"cannot open database {self.path}: {e.strerror or _one_line(e)}", kind) from None
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        try:
            self.db = sqlite_utils.Database(conn)
            self.db.execute("PRAGMA busy_timeout = 10000")
            self._open(time.monotonic() + 10.0)
        except sqlite3.Error as e:
            conn.close()
            raise self._error(e) from None
        except BaseException:
            conn.close()
            raise

    def _open(self, deadline: float) -> None:
        """Check, switch to WAL and migrate; every step is idempotent. SQLite answers "database is locked"
        at once, without waiting out the busy timeout, where waiting could deadlock (a connection inside a
        read transaction that needs a write lock, as switching a new file to WAL can be while other
        processes open it: seen once in CI with four writers opening a new database together), so a busy
        answer starts the steps again until `deadline`."""
        while True:
            try:
                self._check_is_ours()  # both before anything is written: a file that is not ours stays as it was
                self._quick_check()
                self.db.execute("PRAGMA journal_mode = WAL")
                self.db.execute("PRAGMA synchronous = NORMAL")
                migrations.migrate(self.db)
                self._columns = [row[1] for row in self.db.execute("PRAGMA table_info(requests)")]
                return
            except sqlite3.OperationalError as e:
                code = getattr(e, "sqlite_errorcode", 0) or 0
                if code & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
                if self.db.conn.in_transaction:
                    self.db.execute("ROLLBACK")
                time.sleep(0.05)

    # -- plumbing ---------------------------------------------------------------------------------------

    def _error(self, e: sqlite3.Error) -> StoreError:
        msg = _one_line(e)
        code = getattr(e, "sqlite_errorcode", None)
        kind = _SQLITE_KINDS.get(code & 0xFF, OTHER) if isinstance(code, int) else OTHER
        if "not a database" in msg:
            return StoreError(f"database {self.path} is not a hindsight database ({msg})", CORRUPT)
        if "malformed" in msg or "corrupt" in msg:
            return StoreError(f"database {self.path} is corrupt: {msg}", CORRUPT)
        if kind == FULL:
            return StoreError(f"database {self.path}: disk full ({msg})", FULL)
        return StoreError(f"database {self.path}: {msg}", kind)

    def _check_is_ours(self) -> None:
        tables = {t for t in self.db.table_names() if not t.startswith("sqlite_")}
        if tables and migrations.MIGRATIONS_TABLE not in tables:
            raise StoreError(
                f"database {self.path} is not a hindsight database "
                f"(it has tables {', '.join(sorted(tables)[:5])} and no {migrations.MIGRATIONS_TABLE})",
                FOREIGN,
            )

    def _quick_check(self) -> None:
        """`PRAGMA quick_check`: every page and record well-formed (not the indexes' contents). (The file is
        not read through first to warm the page cache: closing any descriptor of the database drops the
        POSIX locks SQLite holds on it in this process, and another process that then closes its last
        connection deletes the WAL under it. Measured: 4 writers lost one writer's commits in 6 of 15 trials.)"""
        problems = [row[0] for row in self.db.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            first = " ".join(" ".join(problems).split())
            raise StoreError(f"database {self.path} is corrupt: {first[:200]}", CORRUPT)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[sqlite_utils.Database]:
        """Hold the lock; turn SQLite errors into StoreError."""
        with self._lock:
            if self._closed:
                raise StoreError(f"database {self.path} is closed")
            try:
                yield self.db
            except sqlite3.Error as e:
                raise self._error(e) from e

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite_utils.Database]:
        """One write transaction: BEGIN IMMEDIATE … COMMIT, ROLLBACK on any exception."""
        with self._guard() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.conn.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _encode(self, fields: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(k for k in fields if k not in self._columns)
        if unknown:
            raise ValueError(f"unknown request column(s): {', '.join(unknown)}")
        out = {}
        for key, value in fields.items():
            redacted = key in REDACTED_COLUMNS
            if key.endswith("_json") and value is not None:
                if isinstance(value, str) and redacted:
                    try:
                        value = json.loads(value)
                    except ValueError:
                        value = redact(value)  # not JSON after all: store it as text, redacted
                        redacted = False
                if not isinstance(value, str):
                    value = json.dumps(redact_obj(value) if redacted else value, ensure_ascii=False)
                    redacted = False
            if redacted and isinstance(value, str):
                value = redact(value)
            out[key] = value
        return out

    @staticmethod
    def _decode(row: dict[str, Any]) -> dict[str, Any]:
        for key, value in row.items():
            if key.endswith("_json") and isinstance(value, str):
                try:
                    row[key] = json.loads(value)
                except ValueError:
                    pass
        return row

    # -- requests ---------------------------------------------------------------------------------------

    def insert_request(self, row: dict[str, Any]) -> str:
        """Insert one request row (keys are column names); returns its id (a new one if none given)."""
        row = dict(row)
        if row.get("id") is None:
            row["id"] = uuid.uuid4().hex[:16]
        if row.get("created_at") is None:
            row["created_at"] = time.time()
        fields = self._encode(row)
        columns = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        with self._write() as db:
            db.execute(f"INSERT INTO requests ({columns}) VALUES ({marks})", list(fields.values()))
        return row["id"]

    def update_request(self, id: str, **fields: Any) -> bool:
        """Set columns of one request, encoded and redacted as on insert. True if the row exists."""
        if "id" in fields:
            raise ValueError("a request's id cannot be changed")
        if not fields:
            return self.get_request(id) is not None
        encoded = self._encode(fields)
        assignments = ", ".join(f"{k} = ?" for k in encoded)
        with self._write() as db:
            cur = db.execute(f"UPDATE requests SET {assignments} WHERE id = ?", [*encoded.values(), id])
            return cur.rowcount > 0

    def set_outcome(
        self,
        id: str,
        outcome: str,
        *,
        reason: str | None = None,
        accepted_length: int | None = None,
        at: float | None = None,
    ) -> bool:
        """Record what became of a suggestion; True if the row changed.

        No outcome yet → any outcome. 'partial' → 'accepted', or 'partial' with a larger accepted_length;
        anything else leaves it partial (a reject after a partial accept keeps the partial). 'accepted',
        'rejected', 'expired' and 'continued' are final. An 'accepted' without accepted_length records the
        completion's length. Unknown id → False. Read, decision and write are one transaction.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {', '.join(sorted(OUTCOMES))}")
        at = time.time() if at is None else at
        with self._write() as db:
            row = db.execute("SELECT outcome, accepted_length FROM requests WHERE id = ?", [id]).fetchone()
            if row is None:
                return False
            current, current_length = row
            if current is None:
                change = True
            elif current == "partial" and outcome == "accepted":
                change = True
            elif current == "partial" and outcome == "partial":
                change = accepted_length is not None and accepted_length > (current_length or 0)
            else:
                change = False
            if not change:
                return False
            if outcome == "partial" and current == "partial":
                reason_sql = "COALESCE(?, outcome_reason)"  # a longer partial keeps the first reason
            else:
                reason_sql = "?"
            length_sql = "COALESCE(?, length(completion))" if outcome == "accepted" else "?"
            db.execute(
                f"UPDATE requests SET outcome = ?, outcome_reason = {reason_sql}, "
                f"accepted_length = {length_sql}, outcome_at = ? WHERE id = ?",
                [outcome, reason, accepted_length, at, id],
            )
            return True

    def mark_shown(self, id: str, at: float | None = None) -> bool:
        """Set shown_at, the first time only. True if it was set now."""
        at = time.time() if at is None else at
        with self._write() as db:
            cur = db.execute("UPDATE requests SET shown_at = ? WHERE id = ? AND shown_at IS NULL", [at, id])
            return cur.rowcount > 0

    def record_actual_text(self, id: str, text: str) -> bool:
        """Record (redacted) what the user actually wrote at the spot, the first time only."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE requests SET actual_text = ?, actual_text_at = ? "
                "WHERE id = ? AND actual_text IS NULL",
                [redact(text), time.time(), id],
            )
            return cur.rowcount > 0

    def record_persistence(self, id: str, slot: str, similarity: float) -> bool:
        """Record how much of an accepted suggestion survives at +30 s or +120 s (slot '30s' / '120s')."""
        column = PERSISTENCE_SLOTS.get(slot)
        if column is None:
            raise ValueError(f"unknown persistence slot {slot!r}; expected '30s' or '120s'")
        with self._write() as db:
            cur = db.execute(f"UPDATE requests SET {column} = ? WHERE id = ?", [float(similarity), id])
            return cur.rowcount > 0

    def expire_open(self) -> int:
        """Shown suggestions that never got an outcome → 'expired'. Returns how many."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE requests SET outcome = 'expired', outcome_at = ? "
                f"WHERE {SHOWN} AND outcome IS NULL",
                [time.time()],
            )
            return cur.rowcount

    def get_request(self, id: str) -> dict[str, Any] | None:
        """One request row with its JSON columns decoded, or None."""
        with self._guard() as db:
            rows = list(db.query("SELECT * FROM requests WHERE id = ?", [id]))
        return self._decode(rows[0]) if rows else None

    # -- events -----------------------------------------------------------------------------------------

    def add_event(self, kind: str, request_id: str | None, payload: dict[str, Any]) -> int:
        """Append one raw event (payload redacted, as JSON); returns its id."""
        encoded = json.dumps(redact_obj(payload), ensure_ascii=False)
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO events (ts, kind, request_id, payload) VALUES (?, ?, ?, ?)",
                [time.time(), kind, request_id, encoded],
            )
            return int(cur.lastrowid)

    def events(self, request_id: str | None = None) -> list[dict[str, Any]]:
        """Events in the order they were added, all or one request's; payloads decoded."""
        with self._guard() as db:
            if request_id is None:
                rows = list(db.query("SELECT * FROM events ORDER BY id"))
            else:
                rows = list(db.query("SELECT * FROM events WHERE request_id = ? ORDER BY id", [request_id]))
        for row in rows:
            if isinstance(row["payload"], str):
                row["payload"] = json.loads(row["payload"])
        return rows

    # -- the learning loop's runs ------------------------------------------------------------------------

    RUN_JSON = ("read", "gate", "refresh", "promoted")

    def add_learning_run(self, run: dict[str, Any]) -> int:
        """Record one run of the learning loop (hindsight/loop); its `read`, `gate`, `refresh` and `promoted`
        are stored as JSON. Returns its id."""
        row = {
            **{k: run.get(k) for k in ("started_at", "ended_at", "status", "trigger", "reason", "duration_s", "peak_rss_mb")},
            **{f"{k}_json": json.dumps(run.get(k), ensure_ascii=False, default=str) for k in self.RUN_JSON},
        }
        with self._write() as db:
            cur = db.execute(f"INSERT INTO learning_runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                             list(row.values()))
            return int(cur.lastrowid)

    def learning_runs(self, statuses: Iterable[str] | None = None, last: bool = False) -> list[dict[str, Any]]:
        """The learning loop's runs (those with one of `statuses`, when given), oldest first, with their JSON
        decoded; `last`: only the newest of them."""
        statuses = None if statuses is None else list(statuses)
        where = "" if statuses is None else f"WHERE status IN ({', '.join('?' * len(statuses))})"
        with self._guard() as db:
            rows = list(db.query(f"SELECT * FROM learning_runs {where} ORDER BY id {'DESC LIMIT 1' if last else ''}",
                                 statuses or []))
        for row in rows:
            for k in self.RUN_JSON:
                row[k] = json.loads(row.pop(f"{k}_json") or "null")
        return rows

    # -- reading ----------------------------------------------------------------------------------------

    def query(self, sql: str, params: Iterable[Any] | dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a read-only SQL query under the store's lock; rows as dicts (JSON columns not decoded)."""
        with self._guard() as db:
            return list(db.query(sql, params if isinstance(params, dict) or params is None else list(params)))

    def stats(self) -> dict[str, Any]:
        """Counts, acceptance rate, latency percentiles and reject reasons over the whole database, in the
        words of hindsight.collector.reader: `shown` counts `SHOWN_ONCE` (a suggestion the user typed ahead
        through is counted in its typed-ahead child), each outcome every row that has it.
        `acceptance_rate` is accepted / shown; partial is separate.
        """
        with self._guard() as db:
            (counts,) = db.query(
                f"""
                SELECT
                  total(decision IS NOT 'alternative') AS requests,
                  total({SHOWN_ONCE}) AS shown,
                  total({ACCEPTED}) AS accepted,
                  total({PARTIAL}) AS partial,
                  total({REJECTED}) AS rejected,
                  total(outcome = 'expired') AS expired,
                  total(outcome = 'continued') AS continued
                FROM requests
                """
            )
            latencies = [
                v
                for (v,) in db.execute(
                    "SELECT latency_ms FROM requests "
                    "WHERE decision IN ('show', 'empty') AND latency_ms IS NOT NULL"
                )
            ]
            reasons = db.execute(
                "SELECT coalesce(outcome_reason, 'unknown'), count(*) FROM requests "
                f"WHERE {REJECTED} GROUP BY 1 ORDER BY 2 DESC, 1"
            ).fetchall()
        stats: dict[str, Any] = {k: int(v) for k, v in counts.items()}
        stats["acceptance_rate"] = stats["accepted"] / stats["shown"] if stats["shown"] else 0.0
        stats["latency_p50_ms"] = percentile(latencies, 50)
        stats["latency_p95_ms"] = percentile(latencies, 95)
        stats["rejected_by_reason"] = {reason: count for reason, count in reasons}
        return stats

    # -- forgetting -------------------------------------------------------------------------------------

    def forget(self, since: float | None = None) -> dict[str, int]:
        """Delete the user's data: every row of every DATA_TABLES table, or (`since`, a Unix time) the
        rows recorded at or after it, with every event about a request deleted. One transaction, so a
        server writing meanwhile waits and then goes on. The events table's append-only triggers are
        dropped and re-created, from their own stored SQL, inside it. Returns the rows deleted per table.
        Follow with `compact()`: until then the deleted text is still in free pages and in the WAL."""
        with self._write() as db:
            tables = {t for t in db.table_names() if not t.startswith("sqlite_")}
            unknown = sorted(tables - set(DATA_TABLES) - {migrations.MIGRATIONS_TABLE})
            if unknown:  # a table this code does not know may hold the user's data: delete nothing
                raise StoreError(f"database {self.path} has tables forget does not know: {', '.join(unknown)}")
            triggers = db.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name IN "
                f"({', '.join('?' for _ in DATA_TABLES)})",
                list(DATA_TABLES),
            ).fetchall()
            for name, _ in triggers:
                db.execute(f'DROP TRIGGER "{name}"')
            deleted = {}
            if since is None:
                for table in DATA_TABLES:
                    deleted[table] = db.execute(f"DELETE FROM {table}").rowcount
            else:
                deleted["events"] = db.execute(
                    "DELETE FROM events WHERE ts >= ? OR request_id IN (SELECT id FROM requests WHERE created_at >= ?)",
                    [since, since],
                ).rowcount
                deleted["requests"] = db.execute("DELETE FROM requests WHERE created_at >= ?", [since]).rowcount
                deleted["learning_runs"] = db.execute("DELETE FROM learning_runs WHERE started_at >= ?", [since]).rowcount
            for _, sql in triggers:
                db.execute(sql)
        return {table: deleted[table] for table in DATA_TABLES}

    def compact(self, attempts: int = 20) -> bool:
        """VACUUM (the file is rebuilt: no free page keeps deleted text), then checkpoint the WAL into the
        file and truncate it to nothing. True when the WAL was truncated; False when a reader in another
        process kept it busy for all `attempts` (a quarter-second apart): run it again later."""
        with self._guard() as db:
            db.execute("VACUUM")
            for _ in range(attempts):
                busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy:
                    return True
                time.sleep(0.25)
        return False

    # -- lifetime ---------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def move_aside(path: Path, tag: str = "corrupt") -> Path:
    """Rename `path`, and its -wal and -shm, to `<name>.<tag>-<UTC time>` beside it; returns the new path.
    Raises OSError when it cannot be renamed."""
    stamp = _utc_stamp()
    target = path.with_name(f"{path.name}.{tag}-{stamp}")
    n = 1
    while any(Path(f"{target}{s}").exists() for s in ("", "-wal", "-shm")):
        n += 1
        target = path.with_name(f"{path.name}.{tag}-{stamp}-{n}")
    os.rename(path, target)
    for suffix in ("-wal", "-shm"):  # SQLite finds the WAL beside the renamed file: nothing committed is lost
        with contextlib.suppress(FileNotFoundError):
            os.rename(f"{path}{suffix}", f"{target}{suffix}")
    return target


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _same_file(a: Path, b: Path) -> bool:
    ia = _identity(a)
    return ia is not None and ia == _identity(b) or os.path.abspath(a) == os.path.abspath(b)


def open_store(path: str | Path | None = None) -> tuple[Store | None, str | None]:
    """Open the database for the server: (the store or None, a one-line notice for the user or None).

    Never raises for a database problem. A corrupt file (or one that is not SQLite at all) is moved aside
    and a fresh database started in its place; a foreign SQLite database is left alone and nothing is
    recorded; an unwritable one is left alone and the default database is used instead, if it is another
    file and opens (see the module docstring for why).
    """
    try:
        target = Path(path).expanduser() if path is not None else db_path()
    except OSError as e:  # the data directory cannot be created
        return None, f"not recording: cannot create the data directory: {e.strerror or _one_line(e)}"
    before = _identity(target)
    try:
        return Store(target), None
    except StoreError as e:
        problem = e
    if problem.kind == CORRUPT:
        if before is None or before != _identity(target):
            try:  # another process moved it aside meanwhile and started a fresh one: use that
                return Store(target), None
            except StoreError as e:
                problem = e
        if problem.kind == CORRUPT:
            try:
                moved = move_aside(target)
            except OSError as e:
                reason = f"{problem}; it cannot be moved aside ({e.strerror or _one_line(e)})"
            else:
                try:
                    return Store(target), f"{problem}; moved it to {moved} and started a fresh one"
                except StoreError as e:
                    reason = f"{problem}; moved it to {moved}, but cannot start a fresh one: {e}"
            return _fallback(target, reason)
    if problem.kind == UNWRITABLE:
        return _fallback(target, str(problem))
    if problem.kind == FULL:
        return None, f"not recording: {problem}; free some space and restart"
    return None, f"not recording: {problem}"


def _fallback(failed: Path, reason: str) -> tuple[Store | None, str]:
    """The default database, when `failed` (which could not be used, for `reason`) is another file."""
    try:
        default = db_path()
    except OSError as e:
        return None, f"not recording: {reason} (and no data directory: {e.strerror or _one_line(e)})"
    if _same_file(default, failed):
        return None, f"not recording: {reason}"
    try:
        return Store(default), f"{reason}; recording to {default} instead"
    except StoreError as e:
        return None, f"not recording: {reason}; the default database cannot be used either: {e}"
