"""Shared test set-up: one data directory per test run (the embedded model is assembled into it once)."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = ROOT / "tests" / "workspace"

# Every server and CLI the tests start uses this data dir unless a test says otherwise.
DATA_DIR = Path(os.environ.setdefault("HINDSIGHT_DATA_DIR", tempfile.mkdtemp(prefix="hindsight-test-data-")))


def rows(db: Path, sql: str, params=()) -> list[dict]:
    """Read the server's database directly, as a user would with sqlite3."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()
