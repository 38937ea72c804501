"""`hindsight cold-start`: the first acceptance gate, before the user has any outcomes of their own.

The simulated developer (`hindsight simulate`) writes code back into files of the Python standard
library, which every install has, through the real server and model; `hindsight train-gate` then trains
the gate on that log and promotes it. No weight is written by hand: the gate is what the project's own
commands produce, and it is replaced as soon as the user's own log trains a better one (`train-gate`
promotes only a gate that is not worse on held-out sessions).

The simulated developer types faster than a person (`PACE_MS`), to keep this to minutes; the gate's
time features are measured in the user's own keystrokes (hindsight/gating/features.py), so that pace carries over.

Packages left out on purpose: idlelib and tkinter, on which `hindsight bench gate` measures the gate
(with the JavaScript of an npm package), so that it is measured on code it was not trained on.
"""

from __future__ import annotations

import asyncio
import sysconfig
import time
from pathlib import Path

from hindsight.gating.dataset import load
from hindsight.gating.gate import current_version
from hindsight.gating.train import train
from hindsight.paths import data_dir
from hindsight.simulate.simulate import simulate

PACKAGES = ("json", "email", "importlib", "http", "logging", "concurrent", "urllib", "xml", "unittest", "multiprocessing", "asyncio", "sqlite3")
PACE_MS = 25.0


def stdlib() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def run(*, files: int = 6, sites: int = 2, seed: int = 0, pace_ms: float = PACE_MS, force: bool = False,
        model: str | None = None, packages: tuple[str, ...] = PACKAGES, log=print) -> dict:
    """Simulate on `packages`, train, promote; returns train-gate's metrics with the simulation's counts."""
    gates = data_dir() / "gates"
    if current_version(gates) is not None and not force:
        return {"skipped": True, "reason": f"a gate is already promoted ({current_version(gates)})"}
    db = data_dir() / "cold-start.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)  # a fresh log: the same seed gives the same gate
    t0 = time.perf_counter()
    totals: dict[str, float] = {}
    options = {"model": model} if model else None
    for i, name in enumerate(packages):
        root = stdlib() / name
        if not root.is_dir():
            continue
        log(f"cold start: simulating edits in {name} ({i + 1}/{len(packages)})")
        summary = asyncio.run(simulate(root, files=files, sites=sites, seed=seed + i, db=db, pace_ms=pace_ms, options=options))
        for key in ("requests", "shown", "accepted", "partial", "rejected"):
            totals[key] = totals.get(key, 0) + summary.get(key, 0)
    simulated_s = time.perf_counter() - t0
    log(f"cold start: training on {int(totals.get('shown', 0))} shown suggestions")
    metrics = train(load([db]), seed=seed, gates_dir=gates, force=force)
    metrics.update(simulated={k: int(v) for k, v in totals.items()}, simulate_seconds=round(simulated_s, 1), db=str(db))
    return metrics
