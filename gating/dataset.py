"""The gate's training data: the suggestions users saw and what they did with them, from one or more
hindsight databases.

A row is a model suggestion that was shown (not typed-ahead, not an alternative the user cycled to) and
got a decisive outcome: accepted or partially accepted (label 1), or rejected (label 0). Expired ones
say nothing about the suggestion, and continued ones are carried on by their typed-ahead child.

Each row is weighted by 1/propensity: a suggestion shown only because the serving gate explored (shown
with probability, say, 0.1) stands for the ten like it that were withheld, so the training data reflects
every request and not just those the previous gate let through.

Rows are grouped by (database, session, file): completions in one file in one sitting are alike, and
cross-validation that split them would flatter the model.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .features import STAGE1, STAGE2, vector


class GateError(Exception):
    """Training or loading the gate cannot go on: no usable data, a database that is not ours. One line."""


# The columns the gate needs, added by migration m004_gate (and m003 for alternative_of).
REQUIRED_COLUMNS = ("session_id", "features_json", "propensity", "alternative_of", "outcome", "decision", "source")

# Shown suggestions with a decisive outcome, and model calls that gave nothing to show ('empty'): stage 1
# decides whether to call the model at all, so a call that comes back empty is one it should skip.
ROWS_SQL = """
    SELECT id, uri, session_id, outcome, features_json, propensity, decision
    FROM requests
    WHERE source = 'model' AND alternative_of IS NULL AND features_json IS NOT NULL
      AND (decision = 'empty' OR (decision = 'show' AND outcome IN ('accepted', 'partial', 'rejected')))
    ORDER BY created_at, id
"""


@dataclass
class Dataset:
    """Feature matrices for both stages, labels, weights and cross-validation groups, row-aligned."""

    X1: np.ndarray  # float32 (n, len(STAGE1)); NaN where a feature is missing
    X2: np.ndarray  # float32 (n, len(STAGE2))
    y: np.ndarray  # int8: 1 = accepted or partially accepted
    shown: np.ndarray  # bool: a suggestion was shown (False: the model call came back empty; stage 1 only)
    w: np.ndarray  # float64: 1 / propensity
    groups: np.ndarray  # int64: one value per (database, session_id, uri)
    ids: list[str]
    group_keys: list[tuple[str, str | None, str | None]] = field(default_factory=list)  # group → its key
    sources: list[Path] = field(default_factory=list)
    skipped: int = 0  # rows whose features_json or propensity could not be used

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: np.ndarray) -> Dataset:
        """The rows at `index` (integer positions or a boolean mask)."""
        idx = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index)
        return Dataset(
            X1=self.X1[idx],
            X2=self.X2[idx],
            y=self.y[idx],
            shown=self.shown[idx],
            w=self.w[idx],
            groups=self.groups[idx],
            ids=[self.ids[i] for i in idx],
            group_keys=self.group_keys,
            sources=self.sources,
            skipped=self.skipped,
        )


def _connect(path: Path) -> sqlite3.Connection:
    """Read-only: the training job must never change (or create) the user's database."""
    if not path.is_file():
        raise GateError(f"no database at {path}")
    try:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.Error as e:
        raise GateError(f"cannot open database {path}: {e}") from None


def _check_schema(conn: sqlite3.Connection, path: Path) -> None:
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "requests" not in tables or "_hindsight_migrations" not in tables:
        raise GateError(f"{path} is not a hindsight database (no requests or _hindsight_migrations table)")
    columns = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise GateError(
            f"{path} predates the gate (no column {', '.join(missing)}; migration m004_gate): "
            "start the hindsight server on it once to migrate it"
        )


def _features(text: str) -> dict[str, float] | None:
    """features_json → name → float; null (how NaN is stored) and non-numbers → NaN; bad JSON → None."""
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    return {k: float(v) if isinstance(v, (int, float)) else math.nan for k, v in raw.items()}


def load(db_paths: list[Path]) -> Dataset:
    """Every usable row of every database in `db_paths`, merged (groups never span databases)."""
    rows1, rows2, labels, shown, weights, groups, ids = [], [], [], [], [], [], []
    group_of: dict[tuple[str, str | None, str | None], int] = {}
    skipped = 0
    for path in map(Path, db_paths):
        conn = _connect(path)
        try:
            _check_schema(conn, path)
            result = conn.execute(ROWS_SQL).fetchall()
        except sqlite3.DatabaseError as e:
            raise GateError(f"{path} is not a readable hindsight database ({e})") from None
        finally:
            conn.close()
        for id_, uri, session_id, outcome, features_json, propensity, decision in result:
            features = _features(features_json)
            p = 1.0 if propensity is None else float(propensity)
            if features is None or not 0.0 < p <= 1.0:
                skipped += 1
                continue
            rows1.append(vector(features, STAGE1)[0])
            rows2.append(vector(features, STAGE2)[0])
            labels.append(outcome in ("accepted", "partial"))
            shown.append(decision == "show")
            weights.append(1.0 / p)
            groups.append(group_of.setdefault((str(path.resolve()), session_id, uri), len(group_of)))
            ids.append(id_)
    n = len(labels)
    return Dataset(
        X1=np.array(rows1, dtype=np.float32).reshape(n, len(STAGE1)),
        X2=np.array(rows2, dtype=np.float32).reshape(n, len(STAGE2)),
        y=np.array(labels, dtype=np.int8),
        shown=np.array(shown, dtype=bool),
        w=np.array(weights, dtype=np.float64),
        groups=np.array(groups, dtype=np.int64),
        ids=ids,
        group_keys=list(group_of),
        sources=[Path(p) for p in db_paths],
        skipped=skipped,
    )
