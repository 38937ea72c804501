"""`hindsight bench loop REPO --days N`: the learning loop as a user lives it, day by day.

    hindsight bench loop REPO [--days N] [--files-per-day F] [--sites S] [--seed S] [--json] [--plot PNG]

A simulated developer (hindsight/simulate/) works on the files of one repository through the real server,
one editor session a day, with the server's automatic learning on (`learning.auto`, a short idle time)
and nothing else: at the end of each day the developer goes idle, the server starts `hindsight learn` by
itself when the log holds enough new signal (the default thresholds), and the next day's server serves
whatever that run promoted. The bench only waits and reads `hindsight.status`. Each day's files are new
(the repository's files in a seeded order, `--files-per-day` a day), so every day is scored on code none
of the earlier days touched, in a data directory of the bench's own (a new user: no gate, no adapter).

Per day: acceptance (accepted in full / shown), the characters from suggestions the developer kept
(`persisted_chars`: accepted whole or word by word; the simulated developer never undoes an accept, so
all of them are still there two minutes later) and their share of the code written that day (days write
different files, so the share is what compares), rejected suggestions shown (and per 1,000 characters
written, which compares across days), the gate's hidden rejects and
lost accepts (suggestions it withheld after generation that the developer would have rejected, or taken
in full or in part, judged against the code that was about to be typed), median latency, and what the run
after the day promoted. Then HumanEval single-line infilling with the base model and with the adapter
current at the end.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from lsprotocol import types

from hindsight.engine.adapters import promoted_for
from hindsight.engine.model import resolve_model
from hindsight.errors import UsageError
from hindsight.evaluation.bench_refresh import in_work_dir
from hindsight.options import LearningOptions
from hindsight.refresh.evaluate import INFILL_TASKS, backend_for, infill
from hindsight.simulate.session import Session
from hindsight.simulate.simulate import plan, simulate, summarize
from hindsight.simulate.simulator import decide

IDLE_MINUTES = 0.5  # the developer's idle time at the end of a day before the server may start a run
START_WAIT_S = 120.0  # after the idle time, how long to wait for a run to start before taking it that none will


class BenchError(UsageError):
    """The bench cannot run on what it was given: one line."""


async def _status(session: Session) -> dict[str, Any]:
    return await session.client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="hindsight.status", arguments=[])
    )


async def wait_for_learning(session: Session, idle_minutes: float = IDLE_MINUTES,
                            progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Stay idle until the server has started a learning run and it has ended (or, when none starts, say
    why not); what the run promoted and what the server serves after it."""
    deadline = time.monotonic() + idle_minutes * 60 + START_WAIT_S
    while not (status := await _status(session))["nextLearning"]["running"]:
        if time.monotonic() > deadline:
            return {"ran": False, "why": status["nextLearning"]["when"], "gate": status["gate"],
                    "adapter": status["adapter"]}
        await asyncio.sleep(2)
    t0, stage = time.monotonic(), None
    while (status := await _status(session))["nextLearning"]["running"]:
        if status["nextLearning"]["stage"] != stage:
            stage = status["nextLearning"]["stage"]
            progress(f"  learning: {stage}")
        await asyncio.sleep(5)
    for _ in range(20):  # the reload after a promotion runs on the model worker: until it is in the status
        last = status.get("lastLearning") or {}
        if not last.get("promoted") or all(_serving(status, p) for p in last["promoted"]):
            break
        await asyncio.sleep(0.5)
        status = await _status(session)
    last = status.get("lastLearning") or {}
    return {"ran": True, "seconds": round(time.monotonic() - t0, 1), "status": last.get("status"),
            "summary": last.get("summary"), "promoted": last.get("promoted") or [], "gate": status["gate"],
            "adapter": status["adapter"]}


def _serving(status: dict, promoted: dict) -> bool:
    served = status["gate"] if promoted["step"] == "gate" else status["adapter"]
    return bool(served) and str(promoted.get("version")) in str(served)


def gate_verdicts(db: Path, since: float, until: float, plans: list) -> dict[str, int]:
    """Among the suggestions the gate withheld after generation between `since` and `until`: how many the
    developer would have rejected (`rejects_hidden`) and taken, in full or in part (`accepts_lost`)."""
    texts = {p.path.resolve().as_uri(): p for p in plans}
    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT uri, line, character, completion FROM requests WHERE decision = 'withheld_stage2' "
            "AND created_at >= ? AND created_at <= ?", (since, until)).fetchall()
    finally:
        con.close()
    hidden = lost = 0
    for uri, line, character, completion in rows:
        p = texts.get(uri)
        if p is None or not completion:
            continue
        lines = p.text.split("\n")
        offset = sum(len(l) + 1 for l in lines[:line]) + character
        site = next((s for s in p.sites if s.offset <= offset <= s.offset + len(s.target)), None)
        if site is None:
            continue
        verdict = decide(completion, p.text[offset : site.offset + len(site.target)])
        hidden += verdict == "rejected"
        lost += verdict != "rejected"
    return {"rejects_hidden": hidden, "accepts_lost": lost}


def share_interval(first: dict, last: dict, key: str, rounds: int = 2000, seed: int = 0) -> list[float] | None:
    """A 90% bootstrap interval of the relative change from the first day to the last of a ratio over
    sites (`key`: 'acceptance', accepted / shown, or 'persisted', characters from suggestions / characters
    written), each day's sites resampled on their own (the days write different files)."""
    import numpy as np

    def table(by_site: dict) -> np.ndarray:
        rows = []
        for steps, written in by_site.values():
            s = summarize(steps, 0, 0)
            kept = sum(len(st.accepted) for st in steps if st.action in ("accepted", "partial"))
            rows.append((s["accepted"], s["shown"]) if key == "acceptance" else (kept, written))
        return np.array(rows, dtype=float)

    a, b = table(first), table(last)
    if not len(a) or not len(b):
        return None
    rng = np.random.default_rng(seed)
    ra = a[rng.integers(0, len(a), (rounds, len(a)))].sum(axis=1)
    rb = b[rng.integers(0, len(b), (rounds, len(b)))].sum(axis=1)
    ok = (ra[:, 0] > 0) & (ra[:, 1] > 0) & (rb[:, 1] > 0)
    if not ok.any():
        return None
    change = (rb[ok, 0] / rb[ok, 1]) / (ra[ok, 0] / ra[ok, 1]) - 1
    return [round(float(q), 3) for q in np.percentile(change, [5, 95])]


def run(repo: Path, *, work: Path, days: int = 3, files_per_day: int = 10, sites: int = 2, seed: int = 0,
        pace_ms: float = 25.0, idle_minutes: float = IDLE_MINUTES, threads: int | None = None,
        infill_tasks: int = INFILL_TASKS, progress: Callable[[str], None] = print) -> dict[str, Any]:
    repo = Path(repo)
    if not repo.is_dir():
        raise BenchError(f"no such repository (a directory): {repo}")
    if days < 2 or files_per_day < 1:
        raise BenchError("--days must be at least 2 and --files-per-day at least 1")
    repo = repo.resolve()
    plans = plan(repo, days * files_per_day, sites, seed)
    if len(plans) < days * files_per_day:
        raise BenchError(f"{repo} has {len(plans)} usable files, fewer than {days} days × {files_per_day}")
    home = work / "data"
    db = work / "hindsight.db"
    env = {"HINDSIGHT_DATA_DIR": str(home)}
    learning = {"auto": True, "idleMinutes": idle_minutes, "threads": threads or len(os.sched_getaffinity(0)),
                "memoryMb": LearningOptions.memory_mb}
    model = resolve_model(None)
    out: list[dict[str, Any]] = []
    by_day: list[dict] = []
    for d in range(days):
        todays = plans[d * files_per_day : (d + 1) * files_per_day]
        chosen = {p.path.relative_to(repo).as_posix() for p in todays}
        steps: list = []
        by_site: dict = {}
        last_day = d == days - 1
        progress(f"day {d + 1}: {len(todays)} files")
        since = time.time()
        summary = asyncio.run(simulate(
            repo, files=files_per_day, sites=sites, seed=seed, db=db, pace_ms=pace_ms,
            options={"learning": learning}, select=lambda rel: rel in chosen, steps=steps, by_site=by_site,
            env=env, after=None if last_day else (lambda s: wait_for_learning(s, idle_minutes, progress)),
        ))
        until = time.time()
        targets = _targets(todays, repo)
        by_day.append({k: (v, targets.get(k, 0)) for k, v in by_site.items()})
        kept = sum(len(s.accepted) for s in steps if s.action in ("accepted", "partial"))
        total = sum(targets[k] for k in by_site if k in targets)
        after = summary.get("after") or {}
        day = {
            "day": d + 1,
            "files": summary["files"], "sites": summary["sites"], "shown": summary["shown"],
            "acceptance": summary["acceptance_rate"],
            "persisted_chars": kept, "written_chars": total,
            "persisted_share": round(kept / total, 4) if total else 0.0,
            "rejected_shown": summary["rejected"],
            "rejected_per_kchar": round(1000 * summary["rejected"] / total, 2) if total else None,
            **gate_verdicts(db, since, until, todays),
            "p50_ms": round(statistics.median(s.latency_ms for s in steps), 1) if steps else None,
            "gate": after.get("gate"), "adapter": after.get("adapter"),
            "promoted": after.get("promoted") if not last_day else None,
            "learning": after.get("summary") or after.get("why"),
            "learning_seconds": after.get("seconds"),
        }
        progress(f"day {d + 1}: acceptance {day['acceptance']}, kept {kept} of {total} characters, "
                 f"rejected shown {day['rejected_shown']}; {day['learning']}")
        out.append(day)
    first, last = out[0], out[-1]
    os.environ["HINDSIGHT_DATA_DIR"] = str(home)  # the adapter current at the end, from the bench's own store
    adapter = promoted_for(model, home / "adapters")
    progress("HumanEval single-line infilling, the base model" + (" and with the adapter" if adapter else ""))
    infill_first = infill(backend_for(model), infill_tasks)
    infill_last = infill(backend_for(model, adapter), infill_tasks) if adapter else infill_first
    return {
        "repo": str(repo), "days": out,
        "acceptance_change": _change(first["acceptance"], last["acceptance"]),
        "acceptance_change_90": share_interval(by_day[0], by_day[-1], "acceptance"),
        "persisted_chars_change": _change(first["persisted_share"], last["persisted_share"]),
        "persisted_chars_change_90": share_interval(by_day[0], by_day[-1], "persisted"),
        "rejected_shown_change": _change(first["rejected_per_kchar"], last["rejected_per_kchar"]),
        "infill_first": infill_first, "infill_last": infill_last, "adapter_last": str(adapter) if adapter else None,
    }


def _targets(plans: list, repo: Path) -> dict[str, int]:
    """The characters each site writes (its target), keyed as `simulate`'s by_site is."""
    return {f"{p.path.relative_to(repo).as_posix()}:{k}": len(site.target) for p in plans for k, site in enumerate(p.sites)}


def _change(before: float, after: float) -> float | None:
    return round(after / before - 1, 4) if before else None


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [d["day"] for d in result["days"]]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2), dpi=120)
    series = [("acceptance", "acceptance (accepted / shown)"),
              ("persisted_share", "share of the code from suggestions"),
              ("rejected_per_kchar", "rejected suggestions shown per 1,000 characters written")]
    for ax, (key, title) in zip(axes, series):
        values = [d[key] for d in result["days"]]
        ax.plot(days, values, marker="o")
        for x, y in zip(days, values):
            ax.annotate(f"{y:.3g}", (x, y), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=7)
        for d in result["days"][:-1]:
            if d["promoted"]:
                ax.axvline(d["day"] + 0.5, color="grey", lw=0.6, ls="--")
        ax.set_title(title, fontsize=8)
        ax.set_xticks(days)
        ax.set_xlabel("day", fontsize=8)
        ax.set_ylim(bottom=0)
    fig.suptitle(f"bench loop on {Path(result['repo']).name}: dashed = something promoted that night", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(repo: Path, *, keep: bool, plot_to: Path | None, progress: Callable[[str], None], **options) -> dict:
    """`hindsight bench loop`: `run` in a work directory of its own (removed afterwards unless `keep`)."""
    return in_work_dir("loop", run, plot, repo, keep=keep, plot_to=plot_to, progress=progress, **options)
