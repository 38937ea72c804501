"""Schema migrations: named, append-only, each applied once, each in its own transaction.

In the style of simonw/llm's `migrations.py`. `_hindsight_migrations(name, applied_at)` records what
has run. Never edit a migration once it is written (a database out there has already run it); a later
change is a new function at the end of this file, decorated with `@migration`. Migrations use plain SQL,
so that what they do cannot change under them when a library is upgraded.
"""

from __future__ import annotations

import time
from typing import Callable

from sqlite_utils import Database

MIGRATIONS_TABLE = "_hindsight_migrations"

Migration = Callable[[Database], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    """Register `fn` as the next migration, under its function name."""
    MIGRATIONS.append((fn.__name__, fn))
    return fn


def applied(db: Database) -> list[str]:
    """Names of the migrations this database has run, in the order they ran."""
    if not db[MIGRATIONS_TABLE].exists():
        return []
    rows = db.execute(f"SELECT name FROM {MIGRATIONS_TABLE} ORDER BY applied_at, rowid").fetchall()
    return [name for (name,) in rows]


def migrate(db: Database) -> list[str]:
    """Apply every migration this database has not run yet, in order; returns the names applied.

    Each runs in its own `BEGIN IMMEDIATE` transaction together with its row in the migrations table,
    and is re-checked inside it, so two processes opening a new database at once apply it once (the
    migrations table is created in one too: no write here upgrades a read transaction). A
    migration that fails is rolled back whole and the exception propagates; the ones before it stay.
    The connection must not be inside a transaction (the Store's runs in autocommit mode).
    """
    if not db[MIGRATIONS_TABLE].exists():
        db.execute("BEGIN IMMEDIATE")  # a write like any other: waits for the lock, never upgrades a read
        try:
            db.execute(f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (name TEXT PRIMARY KEY, applied_at REAL)")
            db.execute("COMMIT")
        except BaseException:
            if db.conn.in_transaction:
                db.execute("ROLLBACK")
            raise
    done = set(applied(db))
    ran = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute(f"SELECT 1 FROM {MIGRATIONS_TABLE} WHERE name = ?", [name]).fetchone():
                db.execute("ROLLBACK")  # another process applied it meanwhile
                continue
            fn(db)
            db.execute(
                f"INSERT INTO {MIGRATIONS_TABLE} (name, applied_at) VALUES (?, ?)", [name, time.time()]
            )
            db.execute("COMMIT")
        except BaseException:
            if db.conn.in_transaction:
                db.execute("ROLLBACK")
            raise
        ran.append(name)
    return ran


def _run(db: Database, statements: list[str]) -> None:
    for sql in statements:
        db.execute(sql)


@migration
def m001_initial(db: Database) -> None:
    _run(
        db,
        [
            """
            CREATE TABLE requests (
                id TEXT PRIMARY KEY,
                created_at REAL,
                uri TEXT,
                language TEXT,
                line INTEGER,
                character INTEGER,
                model TEXT,
                backend TEXT,
                prompt TEXT,
                prefix TEXT,
                suffix TEXT,
                context_json TEXT,
                completion TEXT,
                mode TEXT,
                source TEXT,
                parent_id TEXT,
                n_tokens INTEGER,
                logprob_sum REAL,
                logprob_mean REAL,
                logprob_min REAL,
                timings_json TEXT,
                latency_ms REAL,
                decision TEXT,
                error TEXT,
                shown_at REAL,
                outcome TEXT,
                outcome_reason TEXT,
                accepted_length INTEGER,
                outcome_at REAL,
                actual_text TEXT,
                actual_text_at REAL,
                persist_30s REAL,
                persist_120s REAL
            )
            """,
            "CREATE INDEX idx_requests_created_at ON requests (created_at)",
            "CREATE INDEX idx_requests_uri ON requests (uri)",
            "CREATE INDEX idx_requests_outcome ON requests (outcome)",
            """
            CREATE TABLE events (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                ts REAL,
                kind TEXT,
                request_id TEXT,
                payload TEXT
            )
            """,
            "CREATE INDEX idx_events_request_id ON events (request_id)",
            """
            CREATE TRIGGER events_no_update BEFORE UPDATE ON events
            BEGIN SELECT RAISE(ABORT, 'events is append-only: UPDATE is not allowed'); END
            """,
            """
            CREATE TRIGGER events_no_delete BEFORE DELETE ON events
            BEGIN SELECT RAISE(ABORT, 'events is append-only: DELETE is not allowed'); END
            """,
        ],
    )


@migration
def m002_prompt_tokens(db: Database) -> None:
    """How long each prompt was and how much of it the model's KV cache already held."""
    _run(
        db,
        [
            "ALTER TABLE requests ADD COLUMN prompt_tokens INTEGER",
            "ALTER TABLE requests ADD COLUMN reused_tokens INTEGER",
        ],
    )


@migration
def m003_alternatives(db: Database) -> None:
    """Alternatives the user asked for (decision 'alternative'), each pointing at the request's first."""
    _run(db, ["ALTER TABLE requests ADD COLUMN alternative_of TEXT"])


@migration
def m004_gate(db: Database) -> None:
    """The acceptance gate: the features each decision saw (stage 1 before generation, stage 2 after), the
    gate's calibrated probabilities and version, and the probability that the suggestion was shown
    under the policy that served it (1 ungated; the exploration rate for one shown although the gate
    withheld it), for inverse-propensity weights. `session_id`: one server run (a user's session)."""
    _run(
        db,
        [
            "ALTER TABLE requests ADD COLUMN session_id TEXT",
            "ALTER TABLE requests ADD COLUMN features_json TEXT",
            "ALTER TABLE requests ADD COLUMN gate_p1 REAL",
            "ALTER TABLE requests ADD COLUMN gate_p2 REAL",
            "ALTER TABLE requests ADD COLUMN gate_version TEXT",
            "ALTER TABLE requests ADD COLUMN propensity REAL",
            "ALTER TABLE requests ADD COLUMN explored INTEGER",
        ],
    )


@migration
def m005_learning_runs(db: Database) -> None:
    """One row per run of the learning loop (`hindsight learn`): when, what it read (databases, new judged
    suggestions and pairs since the run before), the gate's and the refresh's results (metrics before and
    after, JSON), what it promoted and why, how long it took and its peak memory."""
    _run(
        db,
        [
            """
            CREATE TABLE learning_runs (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                started_at REAL,
                ended_at REAL,
                status TEXT,
                trigger TEXT,
                read_json TEXT,
                gate_json TEXT,
                refresh_json TEXT,
                promoted_json TEXT,
                reason TEXT,
                duration_s REAL,
                peak_rss_mb REAL
            )
            """,
        ],
    )
