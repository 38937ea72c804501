"""Train the acceptance gate from the user's own outcomes, export it to ONNX, promote it if it is better.

    hindsight train-gate                                  # the user's database → the data dir's gates/
    hindsight train-gate --db a.db --db b.db --json       # several databases, metrics as JSON
    hindsight train-gate --cost-reject 0.5 --force        # a reject costs more; promote whatever comes out

Two LightGBM models: stage 1 sees only the request's context (decides whether to call the model at
all), stage 2 also the completion (decides whether to show it). Steps:

1. ~20% of the (database, session, file) groups are held out, chosen by the seed; the rest is the
   training set.
2. Grouped cross-validation on the training set gives out-of-fold probabilities → the cross-validated
   AUC, an isotonic calibration, and the thresholds (t1, t2) that maximise the utility below.
3. Final models on the whole training set; each is exported to ONNX and must reproduce LightGBM's
   probabilities to 1e-5, or nothing is written.
4. The held-out set measures the new gate and the promoted one on the same rows; the new one is
   promoted only if its stage-2 AUC is not worse (`force` promotes anyway).

Utility: a shown suggestion is worth `value_accept` when accepted and costs `cost_reject` when rejected;
each model call costs `cost_call`. Everything is weighted by 1/propensity.

The version directory `gates/<version>/` (stage1.onnx, stage2.onnx, manifest.json, metrics.json) is
written whole and `gates/current.json` replaced atomically, by the versioned-artefact store
(hindsight.artefacts). Nothing is overwritten; earlier versions stay.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hindsight.gating.dataset import Dataset, GateError
from hindsight.gating.features import STAGE1, STAGE2
from hindsight.gating.gate import MANIFEST_FORMAT, STAGES, Stage, current_version, load_version, versions

MIN_ROWS = 40
MIN_GROUPS = 2
HOLD_OUT = 0.2
MAX_FOLDS = 5
PARITY_TOLERANCE = 1e-5
# One thread: these forests take ~0.1 s to fit, and with two OpenMP threads on a 2-core machine that is
# also running the server (or a benchmark) the threads spin-wait on each other: measured 6.3 s a fit
# against 0.12 s with one.
THREADS = 1
GRID = np.round(np.linspace(0.0, 1.0, 101), 2)  # candidate thresholds, both stages


@dataclass(frozen=True)
class Utility:
    value_accept: float = 1.0
    cost_reject: float = 0.35
    cost_call: float = 0.02

    def shown(self, y: np.ndarray) -> np.ndarray:
        """What showing each suggestion is worth: value_accept if accepted, -cost_reject if not."""
        return np.where(y == 1, self.value_accept, -self.cost_reject)


@dataclass
class TrainResult:
    """What `train` returns as metrics, plus the fitted models (for parity checks) and where it wrote."""

    metrics: dict
    models: dict  # "stage1" / "stage2" → the final LGBMClassifier
    directory: Path
    held_out: np.ndarray  # boolean mask over the dataset's rows


def lgbm(seed: int, n_rows: int):
    """A small, regularised, deterministic forest: the data is one user's, a few hundred to thousands of rows."""
    from lightgbm import LGBMClassifier

    return LGBMClassifier(
        n_estimators=200,
        learning_rate=0.03,
        num_leaves=7,
        max_depth=3,
        min_child_samples=max(5, min(20, n_rows // 30)),
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        reg_lambda=1.0,
        random_state=seed,
        num_threads=THREADS,
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
    )


def _draw(key: tuple) -> float:
    """A uniform number in [0, 1) fixed by the group's session and file alone (not the seed: every
    training run holds out the same groups, so no gate is compared on rows it trained on)."""
    _, session_id, uri = key
    digest = hashlib.sha256(f"held-out\0{session_id}\0{uri}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def held_out_mask(data: Dataset) -> np.ndarray:
    """Rows of ~20% of the groups; at least 1 group held out, and at least 2 left to train on.

    A group's draw depends only on its (session, file), not on what else is in the data or the seed,
    so as the database grows a group stays on its side: the promoted gate has not seen the held-out
    rows it is compared on. With only 2 groups nothing is held out
    (cross-validation needs both); such a gate is promoted only where nothing is promoted yet.
    """
    present = np.unique(data.groups)
    draws = np.array([_draw(data.group_keys[g]) for g in present])
    chosen = draws < HOLD_OUT
    n_hold = int(np.clip(chosen.sum(), 1, len(present) - 2)) if len(present) > 2 else 0
    if n_hold != chosen.sum():  # few groups: take the n_hold lowest draws instead
        chosen = np.zeros(len(present), dtype=bool)
        chosen[np.argsort(draws, kind="stable")[:n_hold]] = True
    return np.isin(data.groups, present[chosen])


def auc(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float | None:
    """Weighted ROC AUC; None when it is undefined (no rows, or one class only)."""
    from sklearn.metrics import roc_auc_score

    if len(y) == 0 or len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, p, sample_weight=w))


def _fit(X: np.ndarray, y: np.ndarray, w: np.ndarray, seed: int):
    model = lgbm(seed, len(y))
    model.fit(X, y, sample_weight=w)
    return model


def out_of_fold(X: np.ndarray, data: Dataset, seed: int) -> tuple[np.ndarray, int]:
    """Out-of-fold P(accept) for every row, by GroupKFold (up to 5 folds); and the number of folds."""
    from sklearn.model_selection import GroupKFold

    folds = min(MAX_FOLDS, len(np.unique(data.groups)))
    oof = np.zeros(len(data), dtype=np.float64)
    for train_idx, test_idx in GroupKFold(n_splits=folds).split(X, data.y, data.groups):
        y, w = data.y[train_idx], data.w[train_idx]
        if len(np.unique(y)) < 2:  # a fold with one class: the best it can say is the base rate
            oof[test_idx] = np.average(y, weights=w)
            continue
        oof[test_idx] = _fit(X[train_idx], y, w, seed).predict_proba(X[test_idx])[:, 1]
    return oof, folds


def calibrate(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[list[float], list[float]]:
    """Isotonic map from raw to calibrated probability, as the x/y points `np.interp` replays."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, y, sample_weight=w)
    return [float(v) for v in iso.X_thresholds_], [float(v) for v in iso.y_thresholds_]


def utility(p1: np.ndarray, p2: np.ndarray, y: np.ndarray, w: np.ndarray, t1: float, t2: float, u: Utility) -> float:
    """Total weighted utility of the gate (t1, t2): calls where p1 ≥ t1, shown where also p2 ≥ t2."""
    called = p1 >= t1
    shown = called & (p2 >= t2)
    return float(np.sum(w * (-u.cost_call * called + shown * u.shown(y))))


def choose_thresholds(p1: np.ndarray, p2: np.ndarray, y: np.ndarray, w: np.ndarray, u: Utility) -> tuple[float, float]:
    """The grid's (t1, t2) with the highest utility; ties go to the lowest thresholds (hide less)."""
    called = (p1[None, :] >= GRID[:, None]).astype(np.float64)  # (t1, row)
    gain = (p2[None, :] >= GRID[:, None]) * (w * u.shown(y))[None, :]  # (t2, row)
    total = -u.cost_call * (called @ w)[:, None] + called @ gain.T  # (t1, t2)
    i, j = np.unravel_index(np.argmax(total), total.shape)
    return float(GRID[i]), float(GRID[j])


def gate_effect(p1, p2, y, w, t1: float, t2: float, u: Utility, shown=None) -> dict:
    """What the gate does to a set of model calls: weighted shares of the shown suggestions hidden and of
    the calls skipped, utilities. `shown`: which calls gave a suggestion (None: all)."""
    shown = np.ones_like(y, dtype=bool) if shown is None else shown
    called = p1 >= t1
    hidden = ~(called & (p2 >= t2))
    rejected, accepted = (y == 0) & shown, y == 1

    def share(mask, of):
        total = np.sum(w[of])
        return float(np.sum(w[mask & of]) / total) if total > 0 else None

    return {
        "rejected_hidden": share(hidden, rejected),
        "accepted_lost": share(hidden, accepted),
        "calls_skipped": share(~called, np.ones_like(called)),
        "utility_with_gate": utility(p1, p2, y, w, t1, t2, u),
        "utility_without_gate": utility(p1, p2, y, w, -1.0, -1.0, u),
    }


def to_onnx(model, n_features: int, X: np.ndarray, stage: str) -> bytes:
    """The model as ONNX, checked: onnxruntime must give LightGBM's probabilities on `X` to 1e-5."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    onx = onnxmltools.convert_lightgbm(  # a fixed graph name (the default is random): same model, same bytes
        model, name=f"hindsight_{stage}", initial_types=[("input", FloatTensorType([None, n_features]))], zipmap=False
    )
    data = onx.SerializeToString()
    names = [f"f{i}" for i in range(n_features)]
    ours = Stage(data, names, [0.0, 1.0], [0.0, 1.0]).raw(X)
    theirs = model.predict_proba(X)[:, 1]
    diff = float(np.max(np.abs(ours - theirs))) if len(X) else 0.0
    if not diff < PARITY_TOLERANCE:
        raise GateError(f"{stage}: the ONNX export differs from LightGBM by {diff:.2e} (> {PARITY_TOLERANCE})", usage=False)
    return data


def _remap(X: np.ndarray, names: list[str], wanted: list[str]) -> np.ndarray:
    """Columns of X (in `names` order) rearranged to `wanted` (an older gate's); unknown names → NaN."""
    if list(names) == list(wanted):
        return X
    where = {n: i for i, n in enumerate(names)}
    out = np.full((len(X), len(wanted)), np.nan, dtype=np.float32)
    for j, n in enumerate(wanted):
        if n in where:
            out[:, j] = X[:, where[n]]
    return out


def current_on(gates_dir: Path, data: Dataset) -> dict:
    """The promoted gate's held-out AUCs on `data`, or why there is none to compare with."""
    version = None
    try:
        version = current_version(gates_dir)
        if version is None:
            return {"version": None, "problem": None}
        gate = load_version(gates_dir, version)
        p1 = gate.stage1.raw(_remap(data.X1, STAGE1, gate.names1)) if len(data) else np.zeros(0)
        p2 = gate.stage2.raw(_remap(data.X2, STAGE2, gate.names2)) if len(data) else np.zeros(0)
    except Exception as e:  # a broken current gate is replaced, never a reason to stop
        why = " ".join(str(e).split()) or type(e).__name__
        return {"version": None, "problem": f"{version}: {why}" if version else why}
    return {
        "version": version,
        "seed": gate.manifest.get("seed"),
        "auc_stage1": auc(data.y, p1, data.w),
        "auc_stage2": auc(data.y[data.shown], p2[data.shown], data.w[data.shown]),
    }


def promotion(new_auc2: float | None, current: dict, force: bool) -> tuple[bool, str]:
    """Promote when nothing (usable) is promoted, or the new held-out stage-2 AUC is not worse."""
    if force:
        return True, "forced"
    if current.get("version") is None:
        if current.get("problem"):
            return True, f"the current gate is unusable ({current['problem']})"
        return True, "no gate promoted yet"
    old = current.get("auc_stage2")
    if new_auc2 is None or old is None:
        return False, "held-out AUC undefined (too few held-out rows or one class): cannot compare"
    if new_auc2 >= old:
        return True, f"held-out stage-2 AUC {new_auc2:.4f} ≥ current {old:.4f}"
    return False, f"held-out stage-2 AUC {new_auc2:.4f} < current {old:.4f} ({current['version']})"


def _check_enough(data: Dataset) -> None:
    n_groups = len(np.unique(data.groups))
    data = data.subset(data.shown)  # the suggestions with an outcome
    if len(data) < MIN_ROWS:
        raise GateError(f"too little data to train the gate: {len(data)} suggestions with an outcome (need {MIN_ROWS})")
    if len(np.unique(data.y)) < 2:
        kind = "accepted" if data.y[0] == 1 else "rejected"
        raise GateError(f"too little data to train the gate: all {len(data)} suggestions were {kind}")
    if n_groups < MIN_GROUPS:
        raise GateError(f"too little data to train the gate: {n_groups} file/session group (need {MIN_GROUPS})")


def _versions() -> dict[str, str]:
    import lightgbm
    import onnx
    import onnxmltools
    import onnxruntime
    import sklearn

    return {m.__name__: m.__version__ for m in (lightgbm, onnxmltools, onnxruntime, onnx, sklearn, np)}


def _json(obj) -> bytes:
    return (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode()


def train_result(
    data: Dataset,
    *,
    value_accept: float = 1.0,
    cost_reject: float = 0.35,
    cost_call: float = 0.02,
    seed: int = 0,
    gates_dir: Path,
    force: bool = False,
) -> TrainResult:
    """`train`, returning the fitted models and the version directory as well as the metrics."""
    _check_enough(data)
    gates_dir = Path(gates_dir)
    u = Utility(value_accept, cost_reject, cost_call)
    hold = held_out_mask(data)
    fit_set, test_set = data.subset(~hold), data.subset(hold)
    if len(np.unique(fit_set.y[fit_set.shown])) < 2:
        raise GateError("too little data to train the gate: the rows left after holding out 20% have one class")

    # Stage 1 learns from every model call (one that came back empty was not worth making); stage 2
    # from the suggestions that were shown.
    shown_fit, shown_test = fit_set.subset(fit_set.shown), test_set.subset(test_set.shown)
    stages = {"stage1": (fit_set, fit_set.X1, test_set.X1, STAGE1), "stage2": (shown_fit, shown_fit.X2, test_set.X2, STAGE2)}
    oof, cal, models, onnx_files, raw_test = {}, {}, {}, {}, {}
    for stage, (rows, X, X_test, names) in stages.items():
        oof[stage], folds = out_of_fold(X, rows, seed)
        cal[stage] = calibrate(oof[stage], rows.y, rows.w)
        models[stage] = _fit(X, rows.y, rows.w, seed)
        onnx_files[stage] = to_onnx(models[stage], len(names), X, stage)
        raw_test[stage] = models[stage].predict_proba(X_test)[:, 1] if len(X_test) else np.zeros(0)

    def calibrated(stage: str, p: np.ndarray) -> np.ndarray:
        return np.interp(p, *cal[stage])

    c1 = calibrated("stage1", oof["stage1"])
    c2 = np.full(len(fit_set), -np.inf)  # an empty call shows nothing, whatever the threshold
    c2[fit_set.shown] = calibrated("stage2", oof["stage2"])
    t1, t2 = choose_thresholds(c1, c2, fit_set.y, fit_set.w, u)
    h1 = calibrated("stage1", raw_test["stage1"])
    h2 = np.where(test_set.shown, calibrated("stage2", raw_test["stage2"]), -np.inf)
    held = {
        "auc_stage1": auc(test_set.y, raw_test["stage1"], test_set.w),
        "auc_stage2": auc(shown_test.y, raw_test["stage2"][test_set.shown], shown_test.w),
        **gate_effect(h1, h2, test_set.y, test_set.w, t1, t2, u, test_set.shown),
    }
    current = current_on(gates_dir, test_set)
    promoted, reason = promotion(held["auc_stage2"], current, force)

    now = dt.datetime.now(dt.timezone.utc)
    version = f"gate-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    counts = {
        "rows": len(data),
        "rows_train": len(fit_set),
        "rows_held_out": len(test_set),
        "groups": int(len(np.unique(data.groups))),
        "groups_held_out": int(len(np.unique(test_set.groups))),
        "rows_skipped": data.skipped,
        "rows_empty": int(np.sum(~data.shown)),
        "accept_rate": float(np.average(data.y[data.shown], weights=data.w[data.shown])) if data.shown.any() else 0.0,
    }
    metrics = {
        "version": version,
        "promoted": promoted,
        "promotion_reason": reason,
        **counts,
        "folds": folds,
        "cv_auc_stage1": auc(fit_set.y, oof["stage1"], fit_set.w),
        "cv_auc_stage2": auc(shown_fit.y, oof["stage2"], shown_fit.w),
        "t1": t1,
        "t2": t2,
        "cv_utility_with_gate": utility(c1, c2, fit_set.y, fit_set.w, t1, t2, u),
        "cv_utility_without_gate": utility(c1, c2, fit_set.y, fit_set.w, -1.0, -1.0, u),
        "held_out": held,
        "current": current,
    }
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": version,
        "created_at": now.isoformat(timespec="seconds"),
        "features": {"stage1": list(STAGE1), "stage2": list(STAGE2)},
        "calibration": {stage: {"x": x, "y": y} for stage, (x, y) in cal.items()},
        "thresholds": {"t1": t1, "t2": t2},
        "utility": asdict(u),
        "seed": seed,
        "counts": counts,
        "sha256": {f"{stage}.onnx": hashlib.sha256(b).hexdigest() for stage, b in onnx_files.items()},
        "libraries": _versions(),
        "sources": [str(p) for p in data.sources],
    }
    files = {f"{stage}.onnx": onnx_files[stage] for stage in STAGES}
    files["manifest.json"] = _json(manifest)
    files["metrics.json"] = _json(metrics)
    store = versions(gates_dir)
    directory = store.write(version, files)
    if promoted:
        store.promote(version)
    metrics["directory"] = str(directory)
    return TrainResult(metrics=metrics, models=models, directory=directory, held_out=hold)


def train(data: Dataset, **options) -> dict:
    """Train, export, write a new version and promote it if it is not worse; returns the metrics.
    `options`: `train_result`'s keywords.

    GateError when there is too little data (nothing is written then) or the export fails its check.
    """
    return train_result(data, **options).metrics
