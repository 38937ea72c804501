"""`hindsight bench refresh REPO`: does learning from what a developer turned down help on the same
repository's other files?

    hindsight bench refresh REPO [--files N] [--held-out-files N] [--sites S] [--epochs E] [--json] [--plot PNG]

1. The simulated developer works on some of the repository's files through the real server (gate off:
   every suggestion shown), which logs every suggestion and outcome.
2. Its dissatisfaction pairs are mined (the text it wrote where it rejected a suggestion).
3. `hindsight refresh` trains a DPO LoRA adapter on them, measures it (held-out replay and HumanEval
   single-line infilling) and decides whether it would be promoted — into the bench's own adapters
   directory, never the user's.
4. The developer works on held-out files (a fifth of the repository's files by a hash of their path,
   never the ones of step 1) twice through the real server: with the base model and with the adapter
   (the server's `adapterPath` option). Acceptance (suggestions taken whole, of those shown) and the
   suggestions' edit similarity to what was about to be typed, before and after.
5. TRL's default DPO configuration trains on the same pairs for a few steps, for its pairs per minute.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from hindsight.engine.model import resolve_model
from hindsight.errors import UsageError
from hindsight.refresh.dpo import DPOConfig
from hindsight.refresh.evaluate import INFILL_TASKS
from hindsight.refresh.job import CHARS_DROP, INFILL_DROP, accepted_rows, held_out, refresh
from hindsight.refresh.pairs import mine
from hindsight.refresh.trl_baseline import trl_pairs_per_minute
from hindsight.simulate.simulate import simulate, summarize


class BenchError(UsageError):
    """The bench cannot run on what it was given (no database, no pairs from the sessions): one line."""


def _logged(db: Path) -> dict:
    """What `simulate` would have said of sessions it logged to `db`, as far as the bench needs it."""
    import sqlite3

    if not db.is_file():
        raise BenchError(f"no database at {db}")
    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        files, shown = con.execute(
            "SELECT COUNT(DISTINCT uri), SUM(decision = 'show') FROM requests WHERE source = 'model'"
        ).fetchone()
    finally:
        con.close()
    return {"files": files, "shown": shown or 0}


def run(
    repo: Path,
    *,
    work: Path,
    files: int = 30,
    held_out_files: int = 12,
    sites: int = 2,
    seed: int = 0,
    pace_ms: float = 25.0,
    epochs: int = 1,
    sft_weight: float = DPOConfig.sft_weight,
    learning_rate: float = DPOConfig.learning_rate,
    anchor_weight: float = DPOConfig.anchor_weight,
    infill_tasks: int = INFILL_TASKS,
    trl_steps: int = 1,
    train_db: Path | None = None,
    model: str | None = None,
    weights: Path | None = None,
    progress=print,
) -> dict:
    """The bench, its databases and adapters in `work`; `train_db`: the training side's sessions, already
    simulated (step 1 is skipped); `model`: the GGUF served and refreshed (default: the embedded model),
    `weights` its Hugging Face directory to train on (`hindsight refresh --weights`)."""
    repo = Path(repo).resolve()
    model_path = resolve_model(model)
    base_options = {"gate": {"enabled": False}, "adapter": False, "model": {"path": str(model_path)}}
    key = lambda rel: f"{repo.name}/{rel}"  # noqa: E731

    if train_db is None:
        progress(f"simulating on up to {files} files of {repo} (the training side)")
        train_db = work / "train.db"
        train_run = asyncio.run(simulate(repo, files=files, sites=sites, seed=seed, db=train_db, pace_ms=pace_ms,
                                         options=base_options, select=lambda rel: not held_out(key(rel))))
    else:
        train_run = _logged(Path(train_db))
    mined = mine([train_db])
    if not mined.pairs:
        raise BenchError(f"the simulated sessions gave no pairs ({mined.counts})")
    progress(f"{len(mined.pairs)} pairs from {train_run['shown']} suggestions shown; refreshing")
    result = refresh(
        pairs=mined.pairs,
        accepted=accepted_rows([train_db]),
        config=DPOConfig(epochs=epochs, seed=seed, sft_weight=sft_weight, learning_rate=learning_rate,
                         anchor_weight=anchor_weight),
        infill_tasks=infill_tasks,
        model_path=model_path,
        weights=weights,
        adapters=work / "adapters",
        progress=progress,
    )
    adapter = work / "adapters" / result["adapter"] / "adapter.gguf"

    replays, steps = {}, {}
    for name, options in (("before", base_options), ("after", {**base_options, "adapter": True, "adapterPath": str(adapter)})):
        progress(f"replaying {held_out_files} held-out files ({name})")
        steps[name] = {}
        replays[name] = asyncio.run(
            simulate(repo, files=held_out_files, sites=sites, seed=seed + 1, db=work / f"held-out-{name}.db",
                     pace_ms=pace_ms, options=options, select=lambda rel: held_out(key(rel)), by_site=steps[name])
        )

    trl = {"pairs_per_minute": None}
    if trl_steps:
        progress("TRL's default DPO configuration on the same pairs")
        # No truncation: TRL 1.16 drops every pair whose prompt reaches its default max_length (1,024
        # tokens), most of ours; ours trains on the whole prompt too.
        trl = trl_pairs_per_minute(mined.pairs, steps=trl_steps, work_dir=work, max_length=None,
                                   model_path=model_path, weights=weights)
    before, after = replays["before"], replays["after"]
    interval = change_interval(steps["before"], steps["after"], seed=seed)
    return {
        "verdict": verdict(interval, before["accepted_chars"], after["accepted_chars"], result["infill_before"],
                           result["infill_after"]),
        "pairs": len(mined.pairs),
        "train_pairs": result["pairs"],
        "train_seconds": result["train_seconds"],
        "pairs_per_minute": result["pairs_per_minute"],
        "pairs_per_minute_trl_default": trl["pairs_per_minute"] and round(trl["pairs_per_minute"], 2),
        "acceptance_before": before["acceptance_rate"],
        "acceptance_after": after["acceptance_rate"],
        "acceptance_change": round(after["acceptance_rate"] / before["acceptance_rate"] - 1, 3)
        if before["acceptance_rate"] else None,
        "acceptance_change_90": interval,
        "es_before": before["es"],
        "es_after": after["es"],
        "accepted_chars_before": before["accepted_chars"],
        "accepted_chars_after": after["accepted_chars"],
        "requests_before": before["requests"],
        "requests_after": after["requests"],
        "shown_before": before["shown"],
        "shown_after": after["shown"],
        "infill_before": result["infill_before"],
        "infill_after": result["infill_after"],
        "replay_acceptance_before": result["acceptance_before"],
        "replay_acceptance_after": result["acceptance_after"],
        "scale": result["scale"],
        "tried": result["tried"],
        "promoted": result["promoted"],
        "why": result["why"],
        "loss": result["loss"],
        "reward_accuracy": result["reward_accuracy"],
        "anchor_weight": anchor_weight,
        "anchor_kl": result["anchor_kl"],
        "files": {"train": train_run["files"], "held_out": before["files"]},
    }


def change_interval(before: dict, after: dict, rounds: int = 2000, seed: int = 0) -> list[float] | None:
    """A 90% bootstrap interval of the relative change in acceptance: the held-out sites resampled, each
    site's before and after together (the same site, the same developer, so the pairing stays)."""
    import numpy as np

    sites = sorted(before.keys() & after.keys())
    if not sites:
        return None

    def counts(steps) -> tuple[int, int]:
        summary = summarize(steps, 0, 0)
        return summary["accepted"], summary["shown"]

    table = np.array([[*counts(before[k]), *counts(after[k])] for k in sites], dtype=float)
    draws = np.random.default_rng(seed).integers(0, len(sites), (rounds, len(sites)))
    acc_b, shown_b, acc_a, shown_a = table[draws].sum(axis=1).T
    ok = (acc_b > 0) & (shown_a > 0)
    if not ok.any():
        return None
    change = (acc_a[ok] / shown_a[ok]) / (acc_b[ok] / shown_b[ok]) - 1
    return [round(float(q), 3) for q in np.percentile(change, [5, 95])]


def verdict(interval: list[float] | None, chars_before: int, chars_after: int, infill_before: float | None,
            infill_after: float | None) -> str:
    """'better' when acceptance on the held-out files rose beyond its 90% interval, the characters the
    developer kept from suggestions did not fall by more than the refresh allows (an adapter accepted more
    often only by saying less is not better) and infilling kept within a point; else what failed."""
    failed = []
    if not interval or interval[0] <= 0:
        failed.append("acceptance did not rise beyond its 90% interval")
    if chars_after < (1 - CHARS_DROP) * chars_before:
        failed.append(f"characters kept fell {chars_before} → {chars_after}")
    if infill_before is not None and infill_after is not None and infill_after < infill_before - INFILL_DROP - 1e-9:
        failed.append(f"infilling fell {infill_before} → {infill_after}")
    return "better" if not failed else "not better: " + "; ".join(failed)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["acceptance (held-out files)", "edit similarity / 100", "HumanEval infill pass@1"]
    before = [result["acceptance_before"], result["es_before"] / 100, result["infill_before"] or 0]
    after = [result["acceptance_after"], result["es_after"] / 100, result["infill_after"] or 0]
    fig, ax = plt.subplots(figsize=(6.5, 3.6), dpi=120)
    x = range(len(labels))
    ax.bar([i - 0.18 for i in x], before, 0.36, label="base model")
    ax.bar([i + 0.18 for i in x], after, 0.36, label="with the DPO adapter")
    for i, (b, a) in enumerate(zip(before, after)):
        ax.text(i - 0.18, b + 0.01, f"{b:.3f}", ha="center", fontsize=7)
        ax.text(i + 0.18, a + 0.01, f"{a:.3f}", ha="center", fontsize=7)
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title(f"refresh on {result['train_pairs']} pairs: before and after", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def in_work_dir(name: str, run: Callable[..., dict], plot: Callable[[dict, Path], None], repo: Path, *, keep: bool,
                plot_to: Path | None, progress: Callable[[str], None], **options) -> dict:
    """`run(repo, work=…, progress=…, **options)` in a work directory of its own (`hindsight-bench-<name>-…`),
    removed afterwards unless `keep`; the result, with `plot` drawn to `plot_to` when given. For the benches
    that simulate sessions into databases and data directories of their own (refresh, loop)."""
    work = Path(tempfile.mkdtemp(prefix=f"hindsight-bench-{name}-"))
    try:
        result = run(repo, work=work, progress=progress, **options)
    finally:  # failed or not, the sessions' databases and artefacts go unless asked for
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    if keep:
        result["work"] = str(work)
    if plot_to:
        plot(result, plot_to)
        result["plot"] = str(plot_to)
    return result


def main(repo: Path, *, keep: bool, plot_to: Path | None, progress: Callable[[str], None], **options) -> dict:
    """`hindsight bench refresh`: `run` (with `options`, its keywords) in a work directory of its own."""
    return in_work_dir("refresh", run, plot, repo, keep=keep, plot_to=plot_to, progress=progress, **options)
