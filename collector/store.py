"""The SQLite store: every request, suggestion, outcome and raw client event.

One `Store` per process, shared by the server's event loop and its worker thread: a lock guards the
connection, and every write is one `BEGIN IMMEDIATE` transaction, so that writers in other processes
(a training job, a second editor) wait for the lock instead of failing with "database is locked" when a
read-then-write transaction tries to upgrade. The connection is in autocommit mode; `_write()` owns the
transactions, and writes are plain SQL (sqlite-utils' insert() would commit on its own, mid-transaction).

Every text that may hold the user's code or secrets goes through `redact` before it is written. The file
is the user's alone: created 0600 before SQLite opens it, in a 0700 directory.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import sqlite_utils

from . import migrations
from .paths import db_path, ensure_private_dir
from .redact import redact, redact_obj

OUTCOMES = frozenset({"accepted", "partial", "rejected", "expired", "continued"})
# Shown to the user: a request's suggestion, or an alternative of it they cycled to.
SHOWN = "(decision = 'show' OR (decision = 'alternative' AND shown_at IS NOT NULL))"
FINAL_OUTCOMES = frozenset({"accepted", "rejected", "expired", "continued"})
PERSISTENCE_SLOTS = {"30s": "persist_30s", "120s": "persist_120s"}
# Columns that may hold code, prose or secrets: redacted before they are written.
REDACTED_COLUMNS = frozenset(
    {"prompt", "prefix", "suffix", "context_json", "completion", "actual_text", "error"}
)


class StoreError(Exception):
    """The database cannot be used: not a hindsight database, corrupt, unreadable. One clear line."""


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
            raise StoreError(f"cannot open database {self.path}: {e.strerror or _one_line(e)}") from None
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        try:
            self.db = sqlite_utils.Database(conn)
            self.db.execute("PRAGMA busy_timeout = 10000")
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")
            self._check_is_ours()
            migrations.migrate(self.db)
            self._columns = [row[1] for row in self.db.execute("PRAGMA table_info(requests)")]
        except sqlite3.Error as e:
            conn.close()
            raise self._error(e) from None
        except BaseException:
            conn.close()
            raise

    # -- plumbing ---------------------------------------------------------------------------------------

    def _error(self, e: sqlite3.Error) -> StoreError:
        msg = _one_line(e)
        if "not a database" in msg:
            return StoreError(f"database {self.path} is not a hindsight database ({msg})")
        if "malformed" in msg or "corrupt" in msg:
            return StoreError(f"database {self.path} is corrupt: {msg}")
        return StoreError(f"database {self.path}: {msg}")

    def _check_is_ours(self) -> None:
        tables = set(self.db.table_names())
        if tables and migrations.MIGRATIONS_TABLE not in tables:
            raise StoreError(
                f"database {self.path} is not a hindsight database "
                f"(it has tables {', '.join(sorted(tables)[:5])} and no {migrations.MIGRATIONS_TABLE})"
            )

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

    # -- reading ----------------------------------------------------------------------------------------

    def query(self, sql: str, params: Iterable[Any] | dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a read-only SQL query under the store's lock; rows as dicts (JSON columns not decoded)."""
        with self._guard() as db:
            return list(db.query(sql, params if isinstance(params, dict) or params is None else list(params)))

    def stats(self) -> dict[str, Any]:
        """Counts, acceptance rate, latency percentiles and reject reasons over the whole database.

        `shown` leaves out suggestions the user typed ahead through ('continued'): the typed-ahead child
        row carries that suggestion on. `acceptance_rate` is accepted / shown; partial is separate.
        """
        with self._guard() as db:
            (counts,) = db.query(
                f"""
                SELECT
                  total(decision IS NOT 'alternative') AS requests,
                  total({SHOWN} AND outcome IS NOT 'continued') AS shown,
                  total(outcome = 'accepted') AS accepted,
                  total(outcome = 'partial') AS partial,
                  total(outcome = 'rejected') AS rejected,
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
                "WHERE outcome = 'rejected' GROUP BY 1 ORDER BY 2 DESC, 1"
            ).fetchall()
        stats: dict[str, Any] = {k: int(v) for k, v in counts.items()}
        stats["acceptance_rate"] = stats["accepted"] / stats["shown"] if stats["shown"] else 0.0
        stats["latency_p50_ms"] = percentile(latencies, 50)
        stats["latency_p95_ms"] = percentile(latencies, 95)
        stats["rejected_by_reason"] = {reason: count for reason, count in reasons}
        return stats

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
