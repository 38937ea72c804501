"""`hindsight simulate`: the simulated developer whose database trains the acceptance gate.

The unit tests pin down what the training data depends on (the accept/reject decision, the seeded pace
and site choice); the slow ones run the real server and model and check that what the developer did is
what the database says happened.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, WORKSPACE, rows
from hindsight.simulate.simulate import candidate_sites, choose_sites, plan, simulate
from hindsight.simulate.simulator import Pace, decide, next_keystroke

GEOMETRY = WORKSPACE / "shapes" / "geometry.py"
REPORT = WORKSPACE / "web" / "report.js"
# A file with many functions, for "another seed picks other sites".
MANY_FUNCTIONS = ROOT / "hindsight" / "collector" / "tracker.py"


# -- the decision ----------------------------------------------------------------------------------------


def test_exact_suggestion_is_accepted():
    assert decide("return x", "return x\n") == "accepted"
    assert decide("return x", "return x") == "accepted"


def test_first_words_matching_are_a_partial_accept():
    intended = "return math.pi * r * r"
    suggestion = "return math.tau * r"
    assert decide(suggestion, intended) == ("partial", len("return math."))
    assert intended.startswith(suggestion[: len("return math.")])


def test_wrong_suggestion_is_rejected():
    assert decide("yield y", "return x") == "rejected"
    assert decide("returned", "return x") == "rejected"  # the first word differs
    assert decide("  yield", "  return") == "rejected"  # only whitespace in common: nothing worth a keystroke


def test_enter_brings_the_next_lines_indentation():
    assert next_keystroke("\n        return r") == "\n        "
    assert next_keystroke("x = 1") == "x"


# -- the pace --------------------------------------------------------------------------------------------


def delays(seed: int, text: str, ms: float = 120.0) -> list[float]:
    pace, out, rest = Pace(random.Random(seed), ms), [], text
    while rest:
        typed = next_keystroke(rest)
        out.append(pace.delay(typed))
        rest = rest[len(typed) :]
    return out


def test_pace_is_seeded_and_human():
    text = GEOMETRY.read_text()[:400]
    a, b, c = delays(1, text), delays(1, text), delays(2, text)
    assert a == b
    assert a != c
    keystrokes = []
    rest = text
    while rest:
        keystrokes.append(next_keystroke(rest))
        rest = rest[len(keystrokes[-1]) :]
    after_newline = [d for k, d in zip(keystrokes, a) if k.startswith("\n")]
    others = sorted(d for k, d in zip(keystrokes, a) if not k.startswith("\n"))
    assert after_newline and all(d >= 0.3 for d in after_newline)
    assert 0.06 < others[len(others) // 2] < 0.25  # the median keystroke is around 120 ms
    assert delays(1, text, ms=5)[0] < 0.05  # a fast pace scales the pauses down too


# -- the edit sites --------------------------------------------------------------------------------------


def function_body_rows(text: str, language: str) -> list[tuple[int, int]]:
    """(first, last) rows of every function body's statements, found independently of the simulator."""
    from hindsight.syntax import parse

    out, stack = [], [parse(text, language).root_node]
    while stack:
        node = stack.pop()
        if node.type in ("function_definition", "function_declaration", "arrow_function", "method_definition"):
            body = node.child_by_field_name("body")
            if body.type in ("block", "statement_block"):
                out.append((body.named_children[0].start_point[0], body.named_children[-1].end_point[0]))
        stack.extend(node.named_children)
    return out


@pytest.mark.parametrize("path, language", [(GEOMETRY, "python"), (REPORT, "javascript")])
def test_sites_lie_inside_function_bodies(path: Path, language: str):
    text = path.read_text()
    sites = candidate_sites(text, language)
    assert sites
    bodies = function_body_rows(text, language)
    lines = text.split("\n")
    for site in sites:
        assert 2 <= site.end_line - site.start_line + 1 <= 15
        assert any(first <= site.start_line and site.end_line <= last for first, last in bodies)
        # From a statement's first character (its indentation stays) to the end of the last line.
        assert text[: site.offset].rsplit("\n", 1)[-1].strip() == ""
        assert site.target == "\n".join(lines[site.start_line : site.end_line + 1]).lstrip()
        assert site.document(text) == text[: site.offset] + text[site.offset + len(site.target) :]


def test_geometry_sites_are_the_multi_line_body():
    (site,) = candidate_sites(GEOMETRY.read_text(), "python")
    assert site.target == "r = to_meters(self.radius)\n        return math.pi * r * r"


def test_site_choice_is_seeded_and_never_overlaps():
    text = MANY_FUNCTIONS.read_text()
    picks = [tuple(choose_sites(text, "python", 4, random.Random(seed))) for seed in range(6)]
    assert picks[0] == tuple(choose_sites(text, "python", 4, random.Random(0)))
    assert len(set(picks)) > 1
    for sites in picks:
        assert len(sites) == 4
        for a, b in zip(sites, sites[1:]):
            assert a.end_line < b.start_line  # in document order, sharing no line


def test_plan_is_deterministic(tmp_path: Path):
    root = tmp_path / "ws"
    shutil.copytree(WORKSPACE, root)
    first = plan(root, files=2, sites=1, seed=3, min_lines=10)
    assert first == plan(root, files=2, sites=1, seed=3, min_lines=10)
    assert [p.path.name for p in plan(root, files=5, sites=1, seed=0)] == ["geometry.py"]  # the only one ≥ 30 lines


# -- the real server -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """One simulation on a copy of the test workspace: (the summary, the steps, the plan, the db)."""
    work = tmp_path_factory.mktemp("simulate")
    root = work / "ws"
    shutil.copytree(WORKSPACE, root)
    db = work / "simulated.db"
    steps = []
    args = dict(files=2, sites=1, seed=0, min_lines=10)
    summary = asyncio.run(
        simulate(root, db=db, pace_ms=5, steps=steps, log_file=work / "server.log", **args)  # type: ignore[arg-type]
    )
    return summary, steps, plan(root.resolve(), **args), db


@pytest.mark.slow
def test_simulation_records_what_the_developer_did(simulated):
    summary, steps, plans, db = simulated
    assert summary["files"] == 2 and summary["sites"] == 2
    assert summary["requests"] == len(steps) > 0
    recorded = {r["id"]: r for r in rows(db, "select * from requests")}
    assert any(r["outcome"] for r in recorded.values())
    expected = {
        "accepted": ("accepted", None),
        "partial": ("partial", None),
        "typed_over": ("rejected", "typed_over"),
        "dismissed": ("rejected", "dismissed"),
    }
    for step in steps:
        if step.action == "empty":
            continue
        row = recorded[step.id]
        outcome, reason = expected[step.action]
        assert row["outcome"] == outcome, (step, row["outcome"], row["outcome_reason"])
        if reason:
            assert row["outcome_reason"] == reason, (step, row["outcome_reason"])


@pytest.mark.slow
def test_accepted_suggestions_were_what_the_developer_was_about_to_type(simulated):
    _, steps, plans, db = simulated
    sites = {p.path.as_uri(): p.sites for p in plans}
    recorded = {r["id"]: r for r in rows(db, "select id, uri from requests")}
    for step in steps:
        if step.action != "accepted":
            continue
        (site,) = [s for s in sites[recorded[step.id]["uri"]] if s.offset <= step.offset <= s.offset + len(s.target)]
        assert site.target[step.offset - site.offset :].startswith(step.suggestion)


def hindsight(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hindsight", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cli_json(tmp_path: Path):
    root = tmp_path / "ws"
    shutil.copytree(WORKSPACE, root)
    db = tmp_path / "cli.db"
    result = hindsight(
        "simulate", str(root), "--files", "1", "--sites", "1", "--pace-ms", "5", "--db", str(db), "--json"
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out) == {
        "files", "sites", "requests", "shown", "accepted", "partial", "rejected", "acceptance_rate", "es",
        "typed_chars", "accepted_chars", "seconds", "db",
    }  # fmt: skip
    assert out["files"] == 1 and out["sites"] == 1 and out["requests"] > 0
    assert 0 <= out["es"] <= 100
    assert out["db"] == str(db) and rows(db, "select count(*) as n from requests")[0]["n"] > 0


def test_cli_missing_repo(tmp_path: Path):
    result = hindsight("simulate", str(tmp_path / "nowhere"), "--db", str(tmp_path / "x.db"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "nowhere" in result.stderr
    assert not (tmp_path / "x.db").exists()


def test_simulate_needs_a_file_and_a_site(tmp_path: Path):
    from hindsight.simulate.simulate import SimulateError

    with pytest.raises(SimulateError, match="at least 1"):
        asyncio.run(simulate(WORKSPACE, files=0, sites=1, seed=0, db=tmp_path / "x.db", pace_ms=5))


def test_cli_repo_without_usable_files(tmp_path: Path):
    (tmp_path / "short.py").write_text("def f():\n    return 1\n")
    result = hindsight("simulate", str(tmp_path), "--db", str(tmp_path / "x.db"))
    assert result.returncode == 2 and "no usable source file" in result.stderr


def test_the_refresh_bench_interval_resamples_sites_and_brackets_the_change():
    from hindsight.evaluation.bench_refresh import change_interval
    from hindsight.simulate.simulator import Step

    def site(accepted: int, rejected: int, empty: int = 1) -> list[Step]:
        return ([Step(0, "x", 1.0, "accepted")] * accepted + [Step(0, "y", 1.0, "typed_over")] * rejected
                + [Step(0, "", 1.0, "empty")] * empty)

    before = {f"f{i}.py:0": site(1, 3) for i in range(40)}
    after = {f"f{i}.py:0": site(2, 2) for i in range(40)}  # every site doubles its acceptance
    assert change_interval(before, after) == [1.0, 1.0]
    after = {k: site(2, 2) if i % 2 else site(1, 3) for i, k in enumerate(after)}  # half the sites do
    low, high = change_interval(before, after)
    assert low < 0.5 < high and high - low < 0.5
    assert change_interval(before, {"other.py:0": site(1, 1)}) is None
