"""The acceptance gate at run time: the promoted version's two ONNX models and their calibration.

`load_gate(gates_dir)` reads `gates_dir/current.json`, checks the version's manifest and the sha256 of
each model file, and opens both in onnxruntime. It never raises: a gate that cannot be used comes back
as `(None, "gate <version>: <why>")`, so the server logs it, tells the user once and serves ungated.

Inference is one row at a time on the server's worker thread, ahead of every request (stage 1) and
after every generation (stage 2), so each call must cost microseconds: one thread, sequential
execution, input and output names looked up once. `p1`/`p2` return the calibrated probability (the
isotonic map, as x/y points, applied with `np.interp`), which is what the thresholds are chosen on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hindsight.artefacts import MANIFEST, ArtefactError, Versions

MANIFEST_FORMAT = 1
STAGES = ("stage1", "stage2")


class GateLoadError(Exception):
    """Why a gate version cannot be used; becomes the one-line problem message."""


def session_options():
    """One thread, sequential, all graph optimizations: single-row latency, not throughput."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # the classifier's label output warns about its shape on every batch
    return options


class Stage:
    """One stage's model: raw probabilities from onnxruntime, calibrated with the isotonic map."""

    def __init__(self, model: bytes, names: list[str], cal_x: list[float], cal_y: list[float]):
        import onnxruntime as ort

        self.names = list(names)
        self.cal_x = np.asarray(cal_x, dtype=np.float64)
        self.cal_y = np.asarray(cal_y, dtype=np.float64)
        self.session = ort.InferenceSession(model, session_options(), providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise GateLoadError(f"model takes {len(inputs)} inputs ({names}), the gate gives it one")
        (inp,) = inputs
        if inp.type != "tensor(float)" or len(inp.shape or []) != 2:
            raise GateLoadError(f"model input {inp.name} is {inp.type} {inp.shape}, the gate gives it float rows")
        width = inp.shape[-1] if inp.shape else None
        if isinstance(width, int) and width != len(self.names):
            raise GateLoadError(f"model takes {width} features, manifest names {len(self.names)}")
        outputs = self.session.get_outputs()
        # onnxmltools' classifier outputs (label, probabilities) with zipmap=False; take the [N, 2] one.
        probs = [o for o in outputs if o.name == "probabilities"] or [o for o in outputs if len(o.shape or []) == 2]
        if not probs:
            raise GateLoadError(f"model has no probabilities output ({', '.join(o.name for o in outputs)})")
        self.input_name = inp.name
        self.output_names = [probs[0].name]

    def raw(self, X: np.ndarray) -> np.ndarray:
        """Uncalibrated P(accept) for a batch (n, n_features) of float32 rows."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        return self.session.run(self.output_names, {self.input_name: X})[0][:, 1]

    def calibrate(self, p: np.ndarray | float) -> np.ndarray:
        return np.interp(p, self.cal_x, self.cal_y)

    def p(self, row: np.ndarray) -> float:
        """Calibrated P(accept) for one row (shape (n_features,) or (1, n_features))."""
        X = np.asarray(row, dtype=np.float32).reshape(1, -1)
        raw = self.session.run(self.output_names, {self.input_name: X})[0][0, 1]
        return float(np.interp(raw, self.cal_x, self.cal_y))


@dataclass
class Gate:
    version: str
    thresholds: tuple[float, float]  # (t1: skip the model call below it, t2: show at or above it)
    stage1: Stage
    stage2: Stage
    manifest: dict

    @property
    def names1(self) -> list[str]:
        return self.stage1.names

    @property
    def names2(self) -> list[str]:
        return self.stage2.names

    def p1(self, row: np.ndarray) -> float:
        """Calibrated P(accept) before generation, from the stage-1 features in `names1` order."""
        return self.stage1.p(row)

    def p2(self, row: np.ndarray) -> float:
        """Calibrated P(accept) of the generated completion, from the stage-2 features in `names2` order."""
        return self.stage2.p(row)


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return " ".join(text.split())[:300]


def versions(gates_dir: Path) -> Versions:
    """The gate's versions in `gates_dir` (hindsight.artefacts)."""
    return Versions(gates_dir, files=(*(f"{stage}.onnx" for stage in STAGES), MANIFEST))


def current_version(gates_dir: Path) -> str | None:
    """The promoted version's name, None when nothing is promoted; GateLoadError when current.json is bad."""
    try:
        return versions(gates_dir).current()
    except ArtefactError as e:
        raise GateLoadError(str(e)) from None


def _check_calibration(manifest: dict, stage: str) -> tuple[list[float], list[float]]:
    cal = manifest["calibration"][stage]
    x, y = [float(v) for v in cal["x"]], [float(v) for v in cal["y"]]
    if not x or len(x) != len(y):
        raise GateLoadError(f"{stage} calibration has {len(x)} x and {len(y)} y points")
    if any(b < a for a, b in zip(x, x[1:])) or not all(0.0 <= v <= 1.0 for v in y):
        raise GateLoadError(f"{stage} calibration is not a non-decreasing map into [0, 1]")
    return x, y


def load_version(gates_dir: Path, version: str) -> Gate:
    """One version's gate, checked: manifest readable, files present with their recorded sha256."""
    store = versions(gates_dir)
    try:
        directory, manifest = store.path(version), store.manifest(version)
    except ArtefactError as e:
        raise GateLoadError(str(e)) from None
    try:
        if manifest.get("format") != MANIFEST_FORMAT:
            raise GateLoadError(f"manifest format {manifest.get('format')!r}, this hindsight reads {MANIFEST_FORMAT}")
        t1, t2 = (float(manifest["thresholds"][k]) for k in ("t1", "t2"))
        stages = []
        for stage in STAGES:
            path = directory / f"{stage}.onnx"
            if not path.is_file():
                raise GateLoadError(f"{path.name} is missing")
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != manifest["sha256"][f"{stage}.onnx"]:
                raise GateLoadError(f"{path.name} does not match its sha256 in the manifest")
            x, y = _check_calibration(manifest, stage)
            try:
                stages.append(Stage(data, manifest["features"][stage], x, y))
            except GateLoadError as e:
                raise GateLoadError(f"{path.name}: {e}") from None
            except Exception as e:  # onnxruntime's own errors (a corrupt or unsupported model)
                raise GateLoadError(f"onnxruntime cannot load {path.name}: {_one_line(e)}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise GateLoadError(f"manifest.json is incomplete ({type(e).__name__}: {_one_line(e)})") from None
    return Gate(version=version, thresholds=(t1, t2), stage1=stages[0], stage2=stages[1], manifest=manifest)


def load_gate(gates_dir: Path) -> tuple[Gate | None, str | None]:
    """The promoted gate and None; (None, None) when none is promoted; (None, why) when it is unusable."""
    version = "current.json"
    try:
        version = current_version(gates_dir)
        if version is None:
            return None, None
        return load_version(gates_dir, version), None
    except GateLoadError as e:
        return None, f"gate {version}: {e}"
    except Exception as e:  # never let a gate take the server down
        return None, f"gate {version}: {type(e).__name__}: {_one_line(e)}"
