"""The acceptance gate's training job and runtime, on a synthetic database written by the real Store.

Acceptance in the synthetic data depends on a stage-1 feature pair (the previous outcome, whitespace
after the cursor) and, more strongly, on a stage-2 one (the completion's mean log-prob), plus noise; a
gate that learned anything must rank it. No model is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hindsight.collector.store import Store
from hindsight.gating.dataset import GateError, load
from hindsight.gating.features import STAGE1, STAGE2
from hindsight.gating.gate import load_gate, versions
from hindsight.gating.train import train, train_result


def _features(rng: np.random.Generator) -> tuple[dict[str, float | None], float]:
    """One request's features (None where the server would store NaN) and its true logit of acceptance."""
    f: dict[str, float | None] = {name: float(rng.normal()) for name in STAGE2}
    prev = rng.choice(["accepted", "partial", "rejected", "none"], p=[0.3, 0.1, 0.4, 0.2])
    for kind in ("accepted", "partial", "rejected", "none"):
        f[f"prev_{kind}"] = float(prev == kind)
    f["log_since_outcome"] = None if prev == "none" else float(rng.exponential(2.0))
    f["ws_after_cursor"] = float(rng.random() < 0.6)
    f["lp_mean"] = float(rng.normal(-1.0, 0.6))
    f["lp_min"] = f["lp_mean"] - float(rng.exponential(1.0))
    f["n_tokens"] = float(rng.integers(1, 60))
    lang = rng.choice(["python", "go"])
    for name in STAGE1:
        if name.startswith("lang_"):
            f[name] = float(name == f"lang_{lang}")
    logit = 2.5 * (f["lp_mean"] + 1.0) + 1.8 * f["prev_accepted"] + 1.4 * f["ws_after_cursor"] - 1.9
    return f, logit + float(rng.logistic() * 0.5)


def make_db(path: Path, n_sessions: int = 8, n_files: int = 5, per_group: int = 20, seed: int = 1) -> list[str]:
    """A database like a user's after some days; returns the ids the gate should train on."""
    rng = np.random.default_rng(seed)
    wanted = []
    t = 1_700_000_000.0
    with Store(path) as store:
        for s in range(n_sessions):
            session = f"session-{s}"
            for f_ in range(n_files):
                uri = f"file:///work/project/module_{f_}.{'py' if f_ % 2 else 'go'}"
                for _ in range(per_group):
                    t += 1.0
                    features, logit = _features(rng)
                    accepted = logit > 0
                    outcome = ("partial" if rng.random() < 0.2 else "accepted") if accepted else "rejected"
                    explored = rng.random() < 0.1
                    row = {
                        "created_at": t,
                        "uri": uri,
                        "language": "python",
                        "decision": "show",
                        "source": "model",
                        "completion": "x = 1",
                        "session_id": session,
                        "features_json": json.dumps(features),  # None → null, as the server stores NaN
                        "propensity": 0.25 if explored else None,
                        "explored": int(explored),
                    }
                    wanted.append(store.insert_request(row))
                    store.set_outcome(wanted[-1], outcome)
                # Rows the gate must not learn from.
                common = {"uri": uri, "session_id": session, "features_json": json.dumps(features)}
                store.insert_request({**common, "decision": "empty", "source": "model"})
                store.insert_request({**common, "decision": "withheld_stage1", "source": "model"})
                other = store.insert_request({**common, "decision": "show", "source": "typed_ahead"})
                store.set_outcome(other, "accepted")
                alt = store.insert_request({**common, "decision": "show", "source": "model", "alternative_of": other})
                store.set_outcome(alt, "rejected")
                expired = store.insert_request({**common, "decision": "show", "source": "model"})
                store.set_outcome(expired, "expired")
                bare = store.insert_request({"uri": uri, "session_id": session, "decision": "show", "source": "model"})
                store.set_outcome(bare, "accepted")
    return wanted


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> tuple[Path, list[str]]:
    path = tmp_path_factory.mktemp("gate-db") / "hindsight.db"
    return path, make_db(path)


@pytest.fixture(scope="module")
def trained(db, tmp_path_factory):
    """One training run, shared: (the dataset, its TrainResult, the gates dir)."""
    gates = tmp_path_factory.mktemp("gates") / "gates"
    data = load([db[0]])
    return data, train_result(data, gates_dir=gates), gates


def test_load_takes_shown_model_suggestions_with_an_outcome_and_empty_calls(db):
    path, wanted = db
    data = load([path])
    assert [i for i, shown in zip(data.ids, data.shown) if shown] == wanted
    # One empty model call per group: stage 1 learns that it was not worth making.
    assert (~data.shown).sum() == 40 and not data.y[~data.shown].any()
    assert data.X1.shape == (len(data), len(STAGE1)) and data.X2.shape == (len(data), len(STAGE2))
    assert data.X1.dtype == np.float32
    # null in features_json is NaN; prev_none rows have no time since the last outcome.
    col = STAGE1.index("log_since_outcome")
    none = data.X1[:, STAGE1.index("prev_none")] == 1
    assert np.isnan(data.X1[none, col]).all() and not np.isnan(data.X1[~none, col]).any()
    assert set(np.unique(data.w)) == {1.0, 4.0}  # propensity NULL → 1, 0.25 → 4
    assert len(np.unique(data.groups)) == 40
    rows = sqlite3.connect(path).execute("SELECT id, outcome FROM requests").fetchall()
    outcome = dict(rows)
    assert [int(outcome[i] in ("accepted", "partial")) for i in data.ids] == data.y.tolist()


def test_load_merges_databases_keeping_groups_apart(db, tmp_path):
    other = tmp_path / "other.db"
    more = make_db(other, n_sessions=2, n_files=2, per_group=5, seed=7)
    data = load([db[0], other])
    assert [i for i, shown in zip(data.ids, data.shown) if shown] == db[1] + more
    # The same session/uri names in the second database are groups of their own.
    assert len(np.unique(data.groups)) == 40 + 4


def test_held_out_groups_stay_held_out_as_data_grows(db, tmp_path):
    from hindsight.gating.train import held_out_mask

    alone = load([db[0]])
    other = tmp_path / "other.db"
    make_db(other, n_sessions=6, n_files=5, per_group=3, seed=9)
    grown = load([db[0], other])
    first = held_out_mask(alone)
    assert 0.1 < first.mean() < 0.35
    # The first database's rows keep their side: a gate trained before never saw today's held-out rows.
    assert (held_out_mask(grown)[: len(alone)] == first).all()


def test_load_rejects_databases_it_cannot_use(tmp_path):
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()
    with pytest.raises(GateError, match=r"foreign\.db is not a hindsight database"):
        load([foreign])
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(GateError, match=r"garbage\.db"):
        load([garbage])
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.execute("CREATE TABLE _hindsight_migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    conn.execute("CREATE TABLE requests (id TEXT, decision TEXT, source TEXT, outcome TEXT, alternative_of TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(GateError, match=r"old\.db predates the gate .*features_json"):
        load([old])
    with pytest.raises(GateError, match=r"no database at .*missing\.db"):
        load([tmp_path / "missing.db"])
    assert not (tmp_path / "missing.db").exists()  # read-only: nothing created


def test_training_writes_a_version_and_promotes_it(trained):
    data, result, gates = trained
    metrics = result.metrics
    directory = gates / metrics["version"]
    assert result.directory == directory
    files = sorted(p.name for p in directory.iterdir())
    assert files == ["manifest.json", "metrics.json", "stage1.onnx", "stage2.onnx"]
    assert directory.stat().st_mode & 0o777 == 0o700
    assert json.loads((gates / "current.json").read_text()) == {"current": metrics["version"], "history": []}
    assert metrics["promoted"] is True and metrics["promotion_reason"] == "no gate promoted yet"
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["features"] == {"stage1": STAGE1, "stage2": STAGE2}
    assert set(manifest["calibration"]) == {"stage1", "stage2"}
    assert manifest["thresholds"] == {"t1": metrics["t1"], "t2": metrics["t2"]}
    on_disk = json.loads((directory / "metrics.json").read_text())
    assert on_disk["version"] == metrics["version"] and on_disk["held_out"] == metrics["held_out"]
    # The held-out set is whole groups, about a fifth of them.
    held = np.unique(data.groups[result.held_out])
    assert not set(held) & set(np.unique(data.groups[~result.held_out]))
    assert 4 <= len(held) <= 14
    assert metrics["rows_train"] + metrics["rows_held_out"] == len(data)
    # It learned the signal: the completion's log-prob makes stage 2 better than stage 1.
    assert metrics["cv_auc_stage2"] > 0.8 and metrics["held_out"]["auc_stage2"] > 0.8
    assert 0.6 < metrics["cv_auc_stage1"] < metrics["cv_auc_stage2"]
    assert metrics["cv_utility_with_gate"] >= metrics["cv_utility_without_gate"]
    for key in ("rejected_hidden", "accepted_lost", "calls_skipped"):
        assert 0.0 <= metrics["held_out"][key] <= 1.0
    # A rejected suggestion costs a third of an accepted one's worth: the gate hides more rejects than accepts.
    assert metrics["held_out"]["rejected_hidden"] > metrics["held_out"]["accepted_lost"]


def test_onnx_files_reproduce_lightgbm(trained):
    import onnxruntime as ort

    data, result, gates = trained
    for stage, X in (("stage1", data.X1), ("stage2", data.X2)):
        session = ort.InferenceSession(str(result.directory / f"{stage}.onnx"), providers=["CPUExecutionProvider"])
        (probs,) = session.run(["probabilities"], {session.get_inputs()[0].name: X})
        expected = result.models[stage].predict_proba(X)[:, 1]
        assert np.max(np.abs(probs[:, 1] - expected)) < 1e-5


def test_gate_gives_calibrated_deterministic_probabilities(trained):
    data, result, gates = trained
    gate, problem = load_gate(gates)
    assert problem is None and gate is not None
    assert gate.version == result.metrics["version"]
    assert gate.thresholds == (result.metrics["t1"], result.metrics["t2"])
    assert gate.names1 == STAGE1 and gate.names2 == STAGE2
    manifest = json.loads((result.directory / "manifest.json").read_text())
    for i in range(0, len(data), 37):
        p1, p2 = gate.p1(data.X1[i]), gate.p2(data.X2[i : i + 1])
        assert 0.0 <= p1 <= 1.0 and 0.0 <= p2 <= 1.0
        assert (p1, p2) == (gate.p1(data.X1[i]), gate.p2(data.X2[i]))
        cal = manifest["calibration"]["stage2"]
        raw = result.models["stage2"].predict_proba(data.X2[i : i + 1])[0, 1]
        assert p2 == pytest.approx(np.interp(raw, cal["x"], cal["y"]), abs=1e-5)

    def timed(fn, row, n=3000):
        times = []
        for _ in range(n):
            start = time.perf_counter_ns()
            fn(row)
            times.append(time.perf_counter_ns() - start)
        return np.percentile(times, 50) / 1000, np.percentile(times, 99) / 1000

    row = data.X2[:1]
    model = result.models["stage2"]
    for name, fn in (("onnxruntime gate.p2", gate.p2), ("lightgbm predict_proba", model.predict_proba)):
        p50, p99 = timed(fn, row)
        print(f"\n{name}: single row p50 {p50:.1f} µs, p99 {p99:.1f} µs", end="")


def _copy(gates: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(gates, tmp_path / "gates"))


def test_a_worse_gate_is_refused_unless_forced(trained, tmp_path):
    data, result, gates = trained
    gates = _copy(gates, tmp_path)
    current = (gates / "current.json").read_text()
    # The training rows' labels shuffled; the held-out rows (the same groups, same seed) keep theirs.
    noise = data.subset(np.arange(len(data)))
    train_rows = np.flatnonzero(~result.held_out)
    noise.y = noise.y.copy()
    noise.y[train_rows] = np.random.default_rng(3).permutation(noise.y[train_rows])
    refused = train(noise, gates_dir=gates)
    assert refused["promoted"] is False
    assert "<" in refused["promotion_reason"] and result.metrics["version"] in refused["promotion_reason"]
    assert refused["current"]["version"] == result.metrics["version"]
    assert refused["current"]["auc_stage2"] == pytest.approx(result.metrics["held_out"]["auc_stage2"])
    assert (gates / "current.json").read_text() == current
    assert (gates / refused["version"] / "manifest.json").is_file()  # kept, just not promoted
    forced = train(noise, gates_dir=gates, force=True)
    assert forced["promoted"] is True and forced["promotion_reason"] == "forced"
    on_disk = json.loads((gates / "current.json").read_text())
    assert on_disk == {"current": forced["version"], "history": [result.metrics["version"]]}
    assert {p.name for p in gates.iterdir() if p.is_dir()} == {
        result.metrics["version"], refused["version"], forced["version"]
    }


def test_an_unusable_current_gate_is_replaced(trained, tmp_path):
    data, result, gates = trained
    version = result.metrics["version"]
    gates = _copy(gates, tmp_path)
    (gates / version / "stage2.onnx").write_bytes(b"not a model")
    metrics = train(data, gates_dir=gates)
    assert metrics["promoted"] is True
    assert metrics["promotion_reason"] == (
        f"the current gate is unusable ({version}: stage2.onnx does not match its sha256 in the manifest)"
    )
    assert json.loads((gates / "current.json").read_text()) == {"current": metrics["version"], "history": [version]}
    # The same data and seed give the same models, byte for byte.
    before = json.loads((result.directory / "manifest.json").read_text())["sha256"]
    after = json.loads((Path(metrics["directory"]) / "manifest.json").read_text())["sha256"]
    assert after == before


def test_load_gate_without_a_promoted_gate(tmp_path):
    assert load_gate(tmp_path / "nowhere") == (None, None)
    assert load_gate(tmp_path) == (None, None)


def test_load_gate_reports_a_damaged_model(trained, tmp_path):
    _, result, gates = trained
    version = result.metrics["version"]
    gates = _copy(gates, tmp_path)
    model = gates / version / "stage2.onnx"
    model.write_bytes(b"\x08\x07garbage" + model.read_bytes()[20:])
    gate, problem = load_gate(gates)
    assert gate is None and problem == f"gate {version}: stage2.onnx does not match its sha256 in the manifest"
    # The same bytes with a manifest that vouches for them: onnxruntime itself refuses them.
    manifest_path = gates / version / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    import hashlib

    manifest["sha256"]["stage2.onnx"] = hashlib.sha256(model.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    gate, problem = load_gate(gates)
    assert gate is None and problem.startswith(f"gate {version}: onnxruntime cannot load stage2.onnx: ")
    assert "\n" not in problem
    (gates / version / "stage1.onnx").unlink()
    assert load_gate(gates) == (None, f"gate {version}: stage1.onnx is missing")


def test_load_gate_reports_a_bad_manifest(trained, tmp_path):
    _, result, gates = trained
    version = result.metrics["version"]
    gates = _copy(gates, tmp_path)
    manifest = gates / version / "manifest.json"
    good = json.loads(manifest.read_text())
    manifest.write_text('{"version": ')
    gate, problem = load_gate(gates)
    assert gate is None and problem.startswith(f"gate {version}: manifest.json is unreadable")
    manifest.write_text(json.dumps({k: v for k, v in good.items() if k != "calibration"}))
    gate, problem = load_gate(gates)
    assert gate is None and problem.startswith(f"gate {version}: manifest.json is incomplete")
    (gates / "current.json").write_text('{"version": "../../etc"}')
    gate, problem = load_gate(gates)
    assert gate is None and "names no valid version" in problem


def test_too_little_data_is_refused_and_writes_nothing(db, tmp_path):
    data = load([db[0]])
    gates = tmp_path / "gates"
    with pytest.raises(GateError, match="too little data.*30 suggestions"):
        train(data.subset(np.arange(30)), gates_dir=gates)
    with pytest.raises(GateError, match="all .* suggestions were rejected"):
        train(data.subset(data.y == 0), gates_dir=gates)
    with pytest.raises(GateError, match="1 file/session group"):
        train(_single_group(data), gates_dir=gates)
    assert not gates.exists()


def _single_group(data):
    """All rows relabelled into one group: enough rows and both classes, but nothing to cross-validate."""
    one = data.subset(np.arange(len(data)))
    one.groups = np.zeros(len(one), dtype=np.int64)
    return one


def _hindsight(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HINDSIGHT_DATA_DIR": str(data_dir)}
    env.pop("HINDSIGHT_DB", None)
    return subprocess.run(
        [sys.executable, "-m", "hindsight", *args], capture_output=True, text=True, timeout=300, env=env
    )


def test_cli_train_gate(db, tmp_path):
    result = _hindsight("train-gate", "--db", str(db[0]), "--json", "--cost-reject", "0.5", data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    keys = {"version", "promoted", "t1", "t2", "cv_auc_stage1", "cv_auc_stage2", "held_out", "current", "directory"}
    assert keys <= set(metrics)
    assert metrics["promoted"] is True
    assert Path(metrics["directory"]).parent == tmp_path / "gates"
    manifest = json.loads((Path(metrics["directory"]) / "manifest.json").read_text())
    assert manifest["utility"]["cost_reject"] == 0.5
    human = _hindsight("train-gate", "--db", str(db[0]), data_dir=tmp_path)
    assert human.returncode == 0, human.stderr
    assert "held-out AUC" in human.stdout and "promoted" in human.stdout


def test_cli_train_gate_on_an_empty_database(tmp_path):
    Store(tmp_path / "hindsight.db").close()  # the user's database (the data dir's), migrated, no rows
    result = _hindsight("train-gate", data_dir=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    expected = "hindsight: too little data to train the gate: 0 suggestions with an outcome (need 40)"
    assert result.stderr.strip() == expected
    assert not (tmp_path / "gates").exists()


def test_cli_train_gate_rollback_goes_back_one_gate(trained, tmp_path):
    """Gates are versioned like adapters: `train-gate --rollback` makes the one promoted before current
    again, and before the first there is no gate (every suggestion shown); nothing is deleted."""
    _, result, shared = trained
    gates = shutil.copytree(shared, tmp_path / "gates")  # the fixture's gates stay as they are
    first = result.metrics["version"]
    store = versions(gates)
    second = f"{first}-b"
    store.write(second, {f.name: f.read_bytes() for f in (gates / first).iterdir()})
    store.promote(second)
    back = _hindsight("train-gate", "--rollback", "--gates-dir", str(gates), "--json", data_dir=tmp_path)
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["current"] == first and load_gate(gates)[0].version == first
    off = _hindsight("train-gate", "--rollback", "--gates-dir", str(gates), "--json", data_dir=tmp_path)
    assert json.loads(off.stdout)["current"] is None and load_gate(gates) == (None, None)
    assert store.names() == sorted([first, second])
