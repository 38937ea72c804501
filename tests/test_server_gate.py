"""The acceptance gate in the real server: features logged for every decision, the two stages withholding
(no model call / not shown), shadow mode, and a corrupt gate file served ungated with one message.

Each server runs with its own data directory (its own gates) and the shared embedded model file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import WORKSPACE, rows
from hindsight.simulate.session import Session
from hindsight.gating.dataset import load
from hindsight.gating.features import STAGE1, STAGE2
from hindsight.gating.train import train
from test_gate_train import make_db

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

GEOMETRY = WORKSPACE / "shapes" / "geometry.py"
TEXT = "import math\n\n\ndef circle_area(radius):\n    return "


@pytest.fixture(scope="module")
def model_path() -> str:
    from hindsight.engine.model import resolve_model

    return str(resolve_model(None))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A data dir holding a promoted gate, trained on a synthetic log."""
    home = tmp_path_factory.mktemp("gated-home")
    db = home / "log.db"
    make_db(db)
    metrics = train(load([db]), gates_dir=home / "gates")
    assert metrics["promoted"]
    return home


async def run(home: Path, model: str, gate: dict, n: int = 2) -> tuple[list, list[dict], list[str]]:
    """Open a document, ask `n` times at its end; (items per request, the rows, messages)."""
    db = home / "server.db"
    options = {"model": model, "databasePath": str(db), "context": {"crossFile": False}, "gate": gate}
    session = await Session.start(WORKSPACE, options=options, env={"HINDSIGHT_DATA_DIR": str(home)})
    try:
        doc = await session.open(GEOMETRY.with_name("_gate_test.py"), TEXT)
        answers = []
        for _ in range(n):
            item, _ = await session.complete(doc, len(TEXT))
            answers.append(item)
    finally:
        await session.close()
    return answers, rows(db, "SELECT * FROM requests ORDER BY created_at"), session.messages


async def test_ungated_logs_features_and_shows(tmp_path, model_path):
    answers, logged, messages = await run(tmp_path, model_path, {})
    assert answers[0] is not None and answers[0].insert_text
    first = logged[0]
    assert first["decision"] == "show" and first["propensity"] == 1.0 and first["gate_p1"] is None
    assert first["session_id"] and first["gate_version"] is None
    features = json.loads(first["features_json"])
    assert set(STAGE2) <= set(features)  # generated: both stages' features
    assert features["lang_python"] == 1.0 and features["ws_after_cursor"] == 1.0
    assert not [m for m in messages if "gate" in m]


async def test_stage1_withholds_without_calling_the_model(tmp_path, trained, model_path):
    home = tmp_path / "home"
    shutil.copytree(trained, home)
    answers, logged, _ = await run(home, model_path, {"stage1Threshold": 1.01, "exploration": 0.0})
    assert answers == [None, None]
    for row in logged:
        assert row["decision"] == "withheld_stage1"
        assert row["completion"] in (None, "") and row["gate_version"]
        assert 0.0 <= row["gate_p1"] <= 1.0 and row["gate_p2"] is None
        timings = json.loads(row["timings_json"])
        assert "prefill_ms" not in timings and "gate1_ms" in timings  # no model call
        assert set(json.loads(row["features_json"])) == set(STAGE1)


async def test_stage2_withholds_after_generating(tmp_path, trained, model_path):
    home = tmp_path / "home"
    shutil.copytree(trained, home)
    answers, logged, _ = await run(home, model_path, {"stage1Threshold": 0.0, "threshold": 1.01, "exploration": 0.0})
    assert answers == [None, None]
    # The second request must not be served the withheld text from the typed-ahead cache either.
    for row in logged:
        assert row["decision"] == "withheld_stage2" and row["source"] == "model"
        assert row["completion"] and 0.0 <= row["gate_p2"] <= 1.0


async def test_shadow_mode_and_exploration_log_propensity(tmp_path, trained, model_path):
    home = tmp_path / "home"
    shutil.copytree(trained, home)
    answers, logged, _ = await run(home, model_path, {"stage1Threshold": 1.01, "shadow": True})
    assert answers[0] is not None
    assert logged[0]["decision"] == "show" and logged[0]["gate_p1"] is not None and logged[0]["propensity"] == 1.0
    answers, logged, _ = await run(home, model_path, {"stage1Threshold": 1.01, "threshold": 0.0, "exploration": 1.0}, n=1)
    assert answers[0] is not None  # withheld at stage 1, shown anyway: explored
    assert logged[-1]["explored"] == 1 and logged[-1]["propensity"] == 1.0  # explored at rate 1


async def test_corrupt_gate_serves_ungated_and_says_so_once(tmp_path, trained, model_path):
    home = tmp_path / "home"
    shutil.copytree(trained, home)
    version = json.loads((home / "gates" / "current.json").read_text())["current"]
    (home / "gates" / version / "stage2.onnx").write_bytes(b"not a model")
    answers, logged, messages = await run(home, model_path, {"exploration": 0.0})
    assert answers[0] is not None and logged[0]["decision"] == "show" and logged[0]["gate_version"] is None
    told = [m for m in messages if "gate" in m]
    assert len(told) == 1 and "showing every suggestion" in told[0]
