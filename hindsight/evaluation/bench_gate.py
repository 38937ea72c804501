"""`hindsight bench gate`: the promoted acceptance gate on sessions it was not trained on.

    hindsight bench gate --repo PATH [--files N] [--seed S] [--json] [--plot FILE]
    hindsight bench gate --db PATH [--db PATH ...] [--json] [--plot FILE]

`--repo` first runs the simulated developer on that repository through the real server with the gate in
shadow mode (it computes and logs both stages' probabilities and its own time, and shows every
suggestion, so every suggestion gets its outcome); `--db` reads sessions already logged. Either way
each suggestion's probabilities are computed again from its logged features with the promoted gate.

Reported: the AUC of each stage; the share of would-be-rejected suggestions hidden when at most 5% of
would-be-accepted ones are lost (read off the trade-off curve of stage 2, and of the cascade with stage 1
at its own threshold); the share of model calls stage 1 skips at its threshold; the acceptance rate of
shown suggestions with and without the gate (at its thresholds); p99 of the whole decision (features
and both stages, as the server logged it) and of one model evaluation alone.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from hindsight.collector.reader import LogError, model_calls
from hindsight.collector.store import percentile
from hindsight.errors import UsageError
from hindsight.gating.features import vector
from hindsight.gating.gate import load_gate
from hindsight.paths import data_dir
from hindsight.simulate.simulate import simulate

LOST_AT_MOST = 0.05


class BenchError(UsageError):
    """The bench cannot measure what it was given (no gate, no sessions): one line."""


def _rows(dbs: list[Path]) -> list[dict]:
    """Every model call with gate features in `dbs` (hindsight.collector.reader's `model_calls`)."""
    try:
        return [row for db in dbs for row in model_calls(db)]
    except LogError as exc:
        raise BenchError(str(exc)) from None


def _tradeoff(p: np.ndarray, y: np.ndarray, extra_hidden: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(share of accepts lost, share of rejects hidden) as the threshold sweeps over `p`'s values."""
    thresholds = np.unique(np.concatenate([[0.0], p, [1.01]]))
    lost, hidden = [], []
    for t in thresholds:
        hide = p < t
        if extra_hidden is not None:
            hide = hide | extra_hidden
        lost.append(hide[y == 1].mean() if (y == 1).any() else 0.0)
        hidden.append(hide[y == 0].mean() if (y == 0).any() else 0.0)
    return np.array(lost), np.array(hidden)


def _at(lost: np.ndarray, hidden: np.ndarray, limit: float = LOST_AT_MOST) -> float:
    ok = lost <= limit + 1e-12
    return float(hidden[ok].max()) if ok.any() else 0.0


def evaluate(dbs: list[Path], gate, plot: Path | None = None) -> dict:
    from sklearn.metrics import roc_auc_score

    rows = _rows(dbs)
    if not rows:
        raise BenchError("no logged suggestions with gate features in " + ", ".join(map(str, dbs)))
    t1, t2 = gate.thresholds
    model_ms, decision_ms = [], []
    p1_all = []
    # The curves and AUCs rank by the raw scores (the isotonic calibration is a step function, which
    # would coarsen the curve); the gate's decisions compare the calibrated ones with its thresholds.
    calls = []  # (raw p1, useful): every model call with a known end (shown and decided, or empty)
    labelled = []  # (p1, p2, raw p1, raw p2, y): the shown suggestions
    for row in rows:
        features = json.loads(row["features_json"])
        x1 = vector(features, gate.names1)
        start = time.perf_counter()
        p1 = gate.p1(x1)
        model_ms.append((time.perf_counter() - start) * 1000)
        p1_all.append(p1)
        timings = json.loads(row["timings_json"] or "{}")
        if "gate1_ms" in timings:
            decision_ms.append(timings["gate1_ms"] + timings.get("gate2_ms", 0.0))
        r1 = float(gate.stage1.raw(x1)[0])
        if row["empty"]:
            calls.append((r1, 0))
        if row["judged"] and "lp_mean" in features:
            useful = int(row["taken"])
            calls.append((r1, useful))
            x2 = vector(features, gate.names2)
            start = time.perf_counter()
            p2 = gate.p2(x2)
            model_ms.append((time.perf_counter() - start) * 1000)
            labelled.append((p1, p2, r1, float(gate.stage2.raw(x2)[0]), useful))
    if len(labelled) < 10 or len({v[-1] for v in labelled}) < 2:
        raise BenchError(f"too few suggestions with outcomes to measure ({len(labelled)})")
    p1s, p2s, r1s, r2s, y = (np.array(v) for v in zip(*labelled))
    stage1_hides = p1s < t1
    lost2, hidden2 = _tradeoff(r2s, y)
    lost_c, hidden_c = _tradeoff(r2s, y, stage1_hides)
    lost1, hidden1 = _tradeoff(r1s, y)
    gated = ~stage1_hides & (p2s >= t2)
    result = {
        "suggestions": len(labelled),
        "requests": len(rows),
        # Stage 1 decides whether a call is worth making: over every call (an empty one was not).
        "auc_stage1": round(float(roc_auc_score([u for _, u in calls], [p for p, _ in calls])), 3),
        "auc_stage1_shown": round(float(roc_auc_score(y, r1s)), 3),
        "auc_stage2": round(float(roc_auc_score(y, r2s)), 3),
        "rejects_hidden_at_5pct": round(_at(lost2, hidden2), 3),
        "rejects_hidden_at_5pct_cascade": round(_at(lost_c, hidden_c), 3),
        "calls_skipped": round(float(np.mean(np.array(p1_all) < t1)), 3),
        "acceptance_shown_ungated": round(float(y.mean()), 3),
        "acceptance_shown_gated": round(float(y[gated].mean()) if gated.any() else 0.0, 3),
        "accepts_lost_gated": round(float((~gated)[y == 1].mean()), 3),
        "rejects_hidden_gated": round(float((~gated)[y == 0].mean()), 3),
        "p99_ms": round(percentile(decision_ms, 99), 3) if decision_ms else None,
        "model_p99_ms": round(percentile(model_ms, 99), 4),
        "thresholds": [round(t1, 4), round(t2, 4)],
        "gate": gate.version,
    }
    if plot is not None:
        _plot(plot, [(lost1, hidden1, "stage 1 (before generation)"), (lost2, hidden2, "stage 2 (after)"),
                     (lost_c, hidden_c, f"cascade (stage 1 at {t1:.2f})")], result)
        result["plot"] = str(plot)
    return result


def _plot(path: Path, curves, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for lost, hidden, label in curves:
        order = np.argsort(lost)
        ax.plot(lost[order] * 100, hidden[order] * 100, label=label)
    ax.axvline(LOST_AT_MOST * 100, color="grey", linestyle=":", label="5% of accepts lost")
    ax.set_xlabel("would-be-accepted suggestions hidden (%)")
    ax.set_ylabel("would-be-rejected suggestions hidden (%)")
    ax.set_title(f"acceptance gate on held-out sessions (AUC {result['auc_stage1']} / {result['auc_stage2']})")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(*, repo: Path | None, dbs: list[Path], files: int, sites: int, seed: int, pace_ms: float,
         keep_db: Path | None, gates_dir: Path | None, plot: Path | None) -> dict:
    """`hindsight bench gate`: the promoted gate (in `gates_dir`, default the data dir's) on the sessions in
    `dbs` and, with `repo`, on sessions simulated there (kept in `keep_db` when given); the result."""
    gates_dir = gates_dir or data_dir() / "gates"
    gate, problem = load_gate(gates_dir)
    if gate is None:
        raise BenchError(problem or f"no promoted gate in {gates_dir}: run `hindsight cold-start` or `hindsight train-gate`")
    dbs = list(dbs)
    if repo:
        work = Path(tempfile.mkdtemp(prefix="hindsight-bench-gate-"))
        db = keep_db or work / "held-out.db"
        asyncio.run(
            simulate(repo, files=files, sites=sites, seed=seed, db=db, pace_ms=pace_ms, options={"gate": {"shadow": True}})
        )
        dbs.append(db)
    if not dbs:
        raise BenchError("give --repo PATH (simulate held-out sessions) or --db PATH")
    return evaluate(dbs, gate, plot)
