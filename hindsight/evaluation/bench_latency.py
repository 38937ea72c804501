"""`hindsight bench latency`: request latency while a developer types, through the real server.

Replays the typing of a real file (default: a module of the Python standard library) with the simulated
developer, twice in the same run: with KV reuse and the typed-ahead cache (the product), and with both off
(every request evaluates its whole prompt). Reports p50/p95 round-trip latency of each, the speed-up,
cold start (server launch → first completion, model load included) and the server's peak RSS.

Absolute times depend on the machine, so the run also measures the machine's own speed with the served
model (after the replays, in this process): one decode step and prefill tokens per second, and gives
p50/p95 in decode steps as well, which compare across machines.

    hindsight bench latency                 # human-readable
    hindsight bench latency --json          # the numbers docs/BENCHMARKS.md records
    hindsight bench latency --file path/to/file.py --lines 120
"""

from __future__ import annotations

import asyncio
import platform
import shutil
import statistics
import sysconfig
import tempfile
import time
from pathlib import Path

from hindsight.collector.store import percentile
from hindsight.engine.backend import GenerationStats
from hindsight.engine.llama_backend import LlamaBackend
from hindsight.engine.model import resolve_model
from hindsight.options import Options
from hindsight.simulate.session import Session
from hindsight.simulate.simulator import SimulatedDeveloper

DEFAULT_FILE = Path(sysconfig.get_paths()["stdlib"]) / "asyncio" / "locks.py"
ASKED = 20  # explicit requests (with alternatives) after the replay
NO_REUSE_MAX_REQUESTS = 60  # every one of these evaluates ~1,000 prompt tokens: keep the run short
SPEED_PROMPT_TOKENS = 1_000  # about what a completion request's prompt holds
SPEED_RUNS = 3  # prompts evaluated from scratch; each is followed by SPEED_STEPS decode steps
SPEED_STEPS = 8


async def replay(path: Path, start_line: int, lines: int, options: dict, max_requests: int | None):
    work = Path(tempfile.mkdtemp(prefix="hindsight-bench-"))
    try:
        root = work / "workspace"
        # The file's whole package is the workspace, so cross-file context has other files to find.
        shutil.copytree(path.parent, root, ignore=shutil.ignore_patterns("__pycache__", "test*"))
        target_path = root / path.name
        original = path.read_text()
        all_lines = original.split("\n")
        head = "\n".join(all_lines[:start_line]) + "\n"
        target = "\n".join(all_lines[start_line : start_line + lines])
        tail = original[len(head) + len(target) :]
        target_path.write_text(original)
        t0 = time.perf_counter()
        session = await Session.start(
            root, options={"databasePath": str(work / "bench.db"), **options}, log_file=work / "server.log"
        )
        import psutil  # the benchmark extra's: imported where it is used

        proc = psutil.Process(session.process_pid)
        rss = [0]

        def sample(step):
            try:
                rss.append(proc.memory_info().rss)
            except psutil.Error:
                pass

        try:
            doc = await session.open(target_path, head + tail)
            # Cold start: launch → the first completion, model load included.
            _, _ = await session.complete(doc, len(head))
            cold_ms = (time.perf_counter() - t0) * 1000
            dev = SimulatedDeveloper(session, doc, len(head), target, on_step=sample, max_requests=max_requests)
            result = await dev.run()
            asked = await ask_for_alternatives(session, doc, len(head), target) if max_requests is None else []
        finally:
            await session.close()
        return result, asked, cold_ms, max(rss) / 2**20
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def ask_for_alternatives(session: Session, doc, start: int, target: str, n: int = ASKED) -> list[tuple[int, float]]:
    """The user asks (cycle or trigger key) at the start of each of `n` lines' code: (items, ms) each."""
    offsets, pos = [], start
    for line in target.split("\n"):
        if line.strip():
            offsets.append(pos + len(line) - len(line.lstrip()))
        pos += len(line) + 1
    picked = offsets[:: max(1, len(offsets) // n)][:n]
    asked = []
    for offset in picked:
        items, ms = await session.ask(doc, offset)
        asked.append((len(items), ms))
    return asked


def speed_prompt(backend: LlamaBackend, tokens: int = SPEED_PROMPT_TOKENS) -> str:
    """The first lines of the default file that make up about `tokens` tokens: the same prompt on every
    machine, whatever file the replay types."""
    lines, count = [], 0
    for line in DEFAULT_FILE.read_text().splitlines(keepends=True):
        if count >= tokens:
            break
        lines.append(line)
        count += backend.count_tokens(line)
    return "".join(lines)


def machine_speed(model: str | None, runs: int = SPEED_RUNS) -> dict:
    """This machine's speed with the model the server serves: one decode step (ms; the median over the
    steps that follow ~1,000-token prompts) and prefill tokens per second (the median over prompts
    evaluated from scratch). The server's model file, context size and thread count; KV reuse off, so
    every run evaluates its whole prompt."""
    options = Options()
    backend = LlamaBackend(resolve_model(model), n_ctx=options.n_ctx, n_threads=options.n_threads, kv_reuse=False)
    prompt = speed_prompt(backend)
    prefill_rates, step_ms = [], []
    for _ in range(runs):
        stats = GenerationStats()
        # A token is yielded as soon as it is chosen, so the time between two yields is one decode step:
        # evaluate the last token, read the logits, choose the next.
        times = [
            time.perf_counter()
            for _ in backend.generate(prompt, max_tokens=SPEED_STEPS + 1, stats=stats, cancelled=lambda: False)
        ]
        prefill_rates.append(stats.prompt_tokens / (stats.prefill_ms / 1000))
        step_ms += [(b - a) * 1000 for a, b in zip(times, times[1:])]
    return {
        "decode_step_ms": round(statistics.median(step_ms), 2),
        "prefill_tokens_per_s": round(statistics.median(prefill_rates)),
    }


def cpu_name() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (Linux on x86); elsewhere what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(path: Path, lines: int, model: str | None, server: dict | None = None) -> dict:
    """`server`: the server's options for a model server (backend, baseUrl, model name and template); the
    replay without KV reuse is then left out (the model server keeps its own cache)."""
    n_lines = len(path.read_text().split("\n"))
    start_line = min(max(0, n_lines - lines), n_lines * 2 // 5)
    remote = bool(server) and server.get("backend", "embedded") != "embedded"
    base = dict(server) if remote else {}
    base["model"] = {**(base.get("model") or {}), **({"path": model} if model else {})}
    fast, asked, cold_ms, rss_mb = asyncio.run(replay(path, start_line, lines, base, None))
    fast_ms = [s.latency_ms for s in fast.steps]
    slow_ms: list[float] = []
    if not remote:
        slow_options = {**base, "completion": {"kvReuse": False, "typedAhead": False}}
        slow, _, _, _ = asyncio.run(replay(path, start_line, lines, slow_options, NO_REUSE_MAX_REQUESTS))
        slow_ms = [s.latency_ms for s in slow.steps]
    p50, p95 = percentile(fast_ms, 50), percentile(fast_ms, 95)
    # No replay without reuse on a model server: its figures are null, not the replay's own again.
    p50_slow, p95_slow = (percentile(slow_ms, 50), percentile(slow_ms, 95)) if slow_ms else (None, None)
    # After the replays, not before: reading the model file here first would warm the page cache for
    # the server's cold start.
    speed = machine_speed(model)
    step = speed["decode_step_ms"]
    return {
        "p50_ms": round(p50, 1),
        "p95_ms": round(p95, 1),
        "p50_ms_no_reuse": p50_slow and round(p50_slow, 1),
        "p95_ms_no_reuse": p95_slow and round(p95_slow, 1),
        "speedup_p50": p50_slow and round(p50_slow / max(p50, 1e-6), 1),
        # The same in decode steps of this machine: comparable across machines.
        "p50_steps": round(p50 / step, 1),
        "p95_steps": round(p95 / step, 1),
        "p50_steps_no_reuse": p50_slow and round(p50_slow / step, 1),
        "p95_steps_no_reuse": p95_slow and round(p95_slow / step, 1),
        "decode_step_ms": step,
        "prefill_tokens_per_s": speed["prefill_tokens_per_s"],
        "cpu": cpu_name(),
        "cold_start_ms": round(cold_ms, 1),
        "rss_mb": round(rss_mb, 1),
        "requests": len(fast_ms),
        "requests_no_reuse": len(slow_ms),
        "backend": base.get("backend", "embedded"),
        "accepted": sum(s.action == "accepted" for s in fast.steps),
        # Asked for explicitly (cycling): the suggestion plus up to completion.alternatives more.
        "asked_p50_ms": round(percentile([ms for _, ms in asked], 50), 1),
        "asked_p95_ms": round(percentile([ms for _, ms in asked], 95), 1),
        "asked_mean_items": round(sum(n for n, _ in asked) / max(len(asked), 1), 2),
        "file": str(path),
        "lines": lines,
    }


def main(*, file: Path | None, lines: int, model: str | None, server: dict | None = None) -> dict:
    """`hindsight bench latency`: the replay of `lines` lines of `file` (default: a standard-library module),
    through the embedded model or a model server (`server`: its options)."""
    return run(file or DEFAULT_FILE, lines, model, server)
