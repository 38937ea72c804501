"""The first gate comes from the project's own commands: simulated sessions on standard-library code
through the real server and model, then train-gate; it loads, and a second run leaves it alone."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_cold_start_trains_and_promotes_a_gate_that_loads(tmp_path, monkeypatch):
    from hindsight.engine.model import resolve_model
    from hindsight.simulate.cold_start import run
    from hindsight.gating.gate import load_gate

    model = str(resolve_model(None))  # the shared data dir's model, before the data dir moves
    monkeypatch.setenv("HINDSIGHT_DATA_DIR", str(tmp_path))
    said = []
    metrics = run(files=3, sites=1, pace_ms=5, packages=("json", "email"), model=model, log=said.append)
    assert metrics["promoted"] and metrics["simulated"]["shown"] >= 20
    assert any("json" in s for s in said) and any("training" in s for s in said)
    gate, problem = load_gate(tmp_path / "gates")
    assert problem is None and gate is not None and gate.version == metrics["version"]
    assert json.loads((tmp_path / "gates" / "current.json").read_text())["current"] == gate.version
    again = run(files=1, sites=1, pace_ms=5, packages=("json",), model=model, log=said.append)
    assert again["skipped"]  # a gate is already promoted: nothing is simulated or replaced
