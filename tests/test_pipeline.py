"""hindsight.pipeline: one request from `CompletionRequest` to suggestions and the log, without LSP.

The real model, a real SQLite file, the real gate code (no gate promoted in the test data dir: every
suggestion shown); no pygls anywhere in these tests, which is the point: the pipeline is the product's
path for one request, and the language server only translates to and from it.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from conftest import rows
from hindsight.pipeline.pipeline import Pipeline, Stale
from hindsight.request import CompletionRequest

pytestmark = pytest.mark.slow

TEXT = "import math\n\n\ndef area(radius):\n    return "


def request(text: str = TEXT, line: int = 4, character: int = 11, language: str = "python") -> CompletionRequest:
    return CompletionRequest(uri="file:///tmp/shapes.py", text=text, line=line, character=character,
                             language=language, path="shapes.py")


@pytest.fixture
async def pipeline(tmp_path):
    told: list[tuple[str, str]] = []
    p = Pipeline(sink=lambda message, level: told.append((level, message)))
    p.configure({"databasePath": str(tmp_path / "log.db"), "context": {"crossFile": False}})
    p.told = told
    yield p
    p.shutdown()
    p.worker.shutdown(wait=True)


async def test_a_request_is_generated_shown_and_recorded(pipeline, tmp_path):
    suggestions = await pipeline.complete(request(), invoked=False, received=time.perf_counter(), current=lambda: True)
    assert suggestions and suggestions[0].text.strip()
    (row,) = rows(tmp_path / "log.db", "SELECT * FROM requests")
    assert row["id"] == suggestions[0].id
    assert row["decision"] == "show" and row["completion"] == suggestions[0].text
    assert row["prompt"].endswith("    return ")  # what the model was asked, exactly
    assert row["session_id"] == pipeline.session_id and row["model"]


async def test_asking_gives_alternatives_recorded_as_such(pipeline, tmp_path):
    suggestions = await pipeline.complete(request(), invoked=True, received=time.perf_counter(), current=lambda: True)
    assert len(suggestions) >= 2 and len({s.text for s in suggestions}) == len(suggestions)
    recorded = rows(tmp_path / "log.db", "SELECT id, decision, alternative_of FROM requests ORDER BY rowid")
    assert recorded[0]["decision"] == "show"
    assert {r["decision"] for r in recorded[1:]} == {"alternative"}
    assert {r["alternative_of"] for r in recorded[1:]} == {suggestions[0].id}


async def test_a_document_that_changed_meanwhile_makes_the_suggestion_stale(pipeline, tmp_path):
    with pytest.raises(Stale):
        await pipeline.complete(request(), invoked=False, received=time.perf_counter(), current=lambda: False)
    (row,) = rows(tmp_path / "log.db", "SELECT decision FROM requests")
    assert row["decision"] == "cancelled"


async def test_the_newest_request_wins(pipeline, tmp_path):
    first = asyncio.ensure_future(pipeline.complete(request(), invoked=False, received=time.perf_counter(), current=lambda: True))
    await asyncio.sleep(0)  # the first is on the worker (or queued) when the second arrives
    second = await pipeline.complete(request(TEXT + "m", character=12), invoked=False, received=time.perf_counter(),
                                     current=lambda: True)
    assert await first is None  # superseded: the client has moved on
    assert second is not None
    decisions = [r["decision"] for r in rows(tmp_path / "log.db", "SELECT decision FROM requests ORDER BY rowid")]
    assert decisions[0] == "cancelled" and decisions[-1] in ("show", "empty")


async def test_a_language_that_is_off_is_not_completed_or_recorded(tmp_path):
    p = Pipeline()
    p.configure({"databasePath": str(tmp_path / "log.db"), "languages": ["go"]})
    try:
        assert await p.complete(request(), invoked=False, received=time.perf_counter(), current=lambda: True) is None
        assert rows(tmp_path / "log.db", "SELECT * FROM requests") == []
    finally:
        p.shutdown()


async def test_outcomes_reach_the_log_and_the_status(pipeline, tmp_path):
    (s,) = (await pipeline.complete(request(), invoked=False, received=time.perf_counter(), current=lambda: True))[:1]
    pipeline.shown(s.id)
    pipeline.rejected(s.id, "no such reason")  # an unknown reason is recorded as the default one
    (row,) = rows(tmp_path / "log.db", "SELECT outcome, outcome_reason FROM requests")
    assert row == {"outcome": "rejected", "outcome_reason": "dismissed"}
    status = pipeline.status()
    assert status["modelLoaded"] and status["served"] == 1 and status["database"] == str(tmp_path / "log.db")


async def test_a_missing_model_is_told_once_and_completions_are_off(tmp_path):
    told: list[tuple[str, str]] = []
    p = Pipeline(sink=lambda message, level: told.append((level, message)))
    p.configure({"databasePath": str(tmp_path / "log.db"), "model": str(tmp_path / "none.gguf")})
    try:
        for _ in range(2):
            assert await p.complete(request(), invoked=False, received=time.perf_counter(), current=lambda: True) is None
        errors = [m for level, m in told if level == "error"]
        assert len(errors) == 1 and "completions are off" in errors[0]
        assert p.status()["modelError"]
    finally:
        p.shutdown()
