"""The gate's training data: the suggestions users saw and what they did with them, from one or more
hindsight databases (read by hindsight.collector.reader's `gate_rows`).

A row is a model suggestion that was shown (not typed-ahead, not an alternative the user cycled to) and
got a decisive outcome: accepted or partially accepted (label 1), or rejected (label 0). Expired ones
say nothing about the suggestion, and continued ones are carried on by their typed-ahead child. A model
call that came back empty is a row too, for stage 1 only (label 0): it was a call not worth making.

Each row is weighted by 1/propensity: a suggestion shown only because the serving gate explored (shown
with probability, say, 0.1) stands for the ten like it that were withheld, so the training data reflects
every request and not just those the previous gate let through.

Rows are grouped by (database, session, file): completions in one file in one sitting are alike, and
cross-validation that split them would flatter the model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hindsight.collector.reader import LogError, gate_rows
from hindsight.errors import HindsightError
from hindsight.gating.features import STAGE1, STAGE2, vector


class GateError(HindsightError):
    """Training or loading the gate cannot go on: no usable data, a database that is not ours. One line."""

    usage = True  # what it was given is refused; an export that fails its check is not (usage=False)


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


def _features(text: str) -> dict[str, float] | None:
    """features_json → name → float; null (how NaN is stored) and non-numbers → NaN; bad JSON → None."""
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    return {k: float(v) if isinstance(v, (int, float)) else math.nan for k, v in raw.items()}


def load(db_paths: list[Path], model: str | None = None) -> Dataset:
    """Every usable row of every database in `db_paths`, merged (groups never span databases); `model`:
    only the calls of the model whose logged name contains it."""
    rows1, rows2, labels, shown, weights, groups, ids = [], [], [], [], [], [], []
    group_of: dict[tuple[str, str | None, str | None], int] = {}
    skipped = 0
    for path in map(Path, db_paths):
        try:
            result = gate_rows(path, model)
        except LogError as e:
            raise GateError(str(e)) from None
        for row in result:
            features = _features(row["features_json"])
            p = 1.0 if row["propensity"] is None else float(row["propensity"])
            if features is None or not 0.0 < p <= 1.0:
                skipped += 1
                continue
            rows1.append(vector(features, STAGE1)[0])
            rows2.append(vector(features, STAGE2)[0])
            labels.append(bool(row["taken"]))
            shown.append(bool(row["judged"]))
            weights.append(1.0 / p)
            groups.append(group_of.setdefault((str(path.resolve()), row["session_id"], row["uri"]), len(group_of)))
            ids.append(row["id"])
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
