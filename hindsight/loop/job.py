"""`hindsight learn`: one run of the learning loop.

    hindsight learn [--db PATH] [--min-outcomes N] [--min-pairs N] [--force] [--no-refresh] [--threads N]
                    [--background] [--json]

From the log, it retrains the acceptance gate when enough suggestions have been judged (accepted, partly
accepted or rejected) since the gate was last trained, and refreshes the DPO adapter when enough new
dissatisfaction signal has come in since the last refresh; each promotes only what measures better
(hindsight/gating/train.py, hindsight/refresh/job.py). One run at a time per data directory (`artefacts.RunLock`): a second one
returns at once, `busy`. Every run that gets the lock is recorded in the log's `learning_runs` table: when,
what it read, each step's result or why it was skipped, what was promoted, how long it took, peak memory.
Then the oldest gate and adapter versions beyond KEEP are deleted (never the current one or the one before).
A run that is killed leaves what it had not promoted unpromoted: the artefact store writes versions whole
and moves its pointer atomically.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any, Callable

from hindsight.artefacts import RunLock
from hindsight.collector.reader import LogError, connect, judged_since
from hindsight.collector.store import Store
from hindsight.errors import HindsightError
from hindsight.engine.adapters import adapters_dir, versions as adapter_versions
from hindsight.gating.dataset import GateError, load
from hindsight.gating.gate import versions as gate_versions
from hindsight.gating.train import train
from hindsight.options import LearningOptions
from hindsight.paths import data_dir
from hindsight.refresh import job as refresh_job
from hindsight.refresh.pairs import mine

MIN_OUTCOMES = LearningOptions.min_outcomes  # judged suggestions since the gate was last trained, before it is again
MIN_PAIRS = LearningOptions.min_pairs  # dissatisfaction signals (rejected, partly taken, not persisted) since the last refresh
KEEP = 5  # gate and adapter versions kept on disk; the current one and the one before it are never deleted


def peak_rss_mb() -> float:
    """The peak resident memory of this process or of any child it waited for (the refresh test-loads the
    adapter in one), in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024  # Linux reports KiB


IOPRIO_SET = {"x86_64": 251, "aarch64": 30}  # the ioprio_set system call's number


def background(threads: int | None) -> None:
    """Make this process (and what it starts) yield to the user's: the idle CPU scheduling class, the lowest
    nice value and idle I/O priority; with `threads`, `limit_threads`. Each is best effort: a system that
    refuses one keeps going."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 19)
    except OSError:
        pass
    number = IOPRIO_SET.get(platform.machine())
    if number is not None:  # IOPRIO_WHO_PROCESS, this process, class 3 (idle)
        ctypes.CDLL(None, use_errno=True).syscall(number, 1, 0, 3 << 13)
    if threads:
        limit_threads(threads)


def limit_threads(threads: int) -> None:
    """At most `threads` CPUs for this process and what it starts (the training libraries read
    OMP_NUM_THREADS when they load, after this; llama.cpp takes as many threads as the CPUs it may use)."""
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, cpus[-threads:])  # the last ones: a server's model thread starts on the first
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)


def last_trained(db: Path) -> dict[str, float | None]:
    """When the last run that trained the gate (`gate`) and the last that refreshed the adapter (`refresh`)
    started, each None when none did: the new signal each step waits for is counted from there."""
    with Store(db) as store:
        runs = store.learning_runs(("done",))
    return {step: next((r["started_at"] for r in reversed(runs) if r.get(step) and not r[step].get("skipped")), None)
            for step in ("gate", "refresh")}


def run(db: Path, *, min_outcomes: int = MIN_OUTCOMES, min_pairs: int = MIN_PAIRS, force: bool = False,
        refresh: bool = True, trigger: str = "command", progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One run on the database `db` (the data directory's gates and adapters); its record. `force`: every
    step whatever the signal; `refresh`: False leaves the adapter alone."""
    say = progress or (lambda message: None)
    connect(db).close()  # LogError (refused, exit status 2) for no database or not one of ours: nothing is created
    with RunLock(data_dir()) as lock:
        if not lock.held:
            return {"status": "busy", "reason": f"another run holds {lock.path}"}
        started = time.time()
        record: dict[str, Any] = {"started_at": started, "trigger": trigger, "promoted": []}
        try:
            since = last_trained(db)
            judged = judged_since(db, since["gate"])
            dsat = sum(mine([db], since=since["refresh"]).counts["dsat"].values())
            record["read"] = {"database": str(db), "since": since["gate"], "refresh_since": since["refresh"],
                              "judged_new": judged, "dsat_new": dsat}
            record["gate"] = _gate(db, judged, min_outcomes, force, say)
            record["refresh"] = _refresh(db, dsat, min_pairs, force, refresh, say)
            for step in ("gate", "refresh"):
                if record[step].get("promoted"):
                    record["promoted"].append({"step": step, "version": record[step].get("version")})
            record["pruned"] = {"gates": gate_versions(data_dir() / "gates").prune(KEEP),
                                "adapters": adapter_versions(adapters_dir()).prune(KEEP)}
            ran = [s for s in ("gate", "refresh") if not record[s].get("skipped")]
            record["status"] = "done" if ran else "skipped"
            record["reason"] = "; ".join(f"{s}: {record[s].get('reason')}" for s in ("gate", "refresh"))
        except (HindsightError, OSError) as exc:
            record.update(status="failed", reason=str(exc))
        record["ended_at"] = time.time()
        record["duration_s"] = record["ended_at"] - started
        record["peak_rss_mb"] = peak_rss_mb()
        try:
            with Store(db) as store:
                record["id"] = store.add_learning_run(record)
        except HindsightError as exc:  # the run's work stands; only its record is lost
            record["record_error"] = str(exc)
        return record


def _gate(db: Path, judged: int, min_outcomes: int, force: bool, say: Callable[[str], None]) -> dict[str, Any]:
    if judged < min_outcomes and not force:
        return {"skipped": True, "reason": f"{judged} suggestions judged since the gate was last trained, "
                                           f"fewer than {min_outcomes}"}
    say("training the acceptance gate")
    try:
        metrics = train(load([db]), gates_dir=data_dir() / "gates")
    except (GateError, LogError) as exc:
        return {"skipped": True, "reason": str(exc)}
    held = metrics.get("held_out") or {}
    return {"version": metrics["version"], "promoted": metrics["promoted"], "reason": metrics["promotion_reason"],
            "rows": metrics["rows"], "auc_stage2": held.get("auc_stage2"),
            "current_auc_stage2": (metrics.get("current") or {}).get("auc_stage2")}


def _refresh(db: Path, dsat: int, min_pairs: int, force: bool, enabled: bool,
             say: Callable[[str], None]) -> dict[str, Any]:
    if not enabled:
        return {"skipped": True, "reason": "not asked for"}
    if dsat < min_pairs and not force:
        return {"skipped": True, "reason": f"{dsat} dissatisfied suggestions since the last refresh, fewer than {min_pairs}"}
    say("refreshing the adapter")
    try:
        result = refresh_job.run(dbs=[db], progress=say)
    except refresh_job.RefreshError as exc:
        return {"skipped": True, "reason": str(exc)}
    keep = ("before", "scale", "held_out_items", "acceptance_before", "acceptance_after", "accepted_chars_before",
            "accepted_chars_after", "infill_before", "infill_after", "seconds")
    return {"version": result.get("adapter"), "promoted": bool(result.get("promoted")), "reason": result.get("why"),
            **{k: result[k] for k in keep if k in result}}
