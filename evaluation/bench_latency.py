"""`hindsight bench latency`: request latency while a developer types, through the real server.

Replays the typing of a real file (default: a module of the Python standard library) with the simulated
developer, twice in the same run: with KV reuse and the typed-ahead cache (the product), and with both off
(every request evaluates its whole prompt). Reports p50/p95 round-trip latency of each, the speed-up,
cold start (server launch → first completion, model load included) and the server's peak RSS.

    hindsight bench latency                 # human-readable
    hindsight bench latency --json          # the numbers docs/BENCHMARKS.md records
    hindsight bench latency --file path/to/file.py --lines 120
"""

from __future__ import annotations

import asyncio
import shutil
import sysconfig
import tempfile
import time
from pathlib import Path

import psutil

from collector.store import percentile

from . import print_result
from .session import Session
from .simulator import SimulatedDeveloper

DEFAULT_FILE = Path(sysconfig.get_paths()["stdlib"]) / "asyncio" / "locks.py"
ASKED = 20  # explicit requests (with alternatives) after the replay
NO_REUSE_MAX_REQUESTS = 60  # every one of these evaluates ~1,000 prompt tokens: keep the run short


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


def run(path: Path, lines: int, model: str | None) -> dict:
    n_lines = len(path.read_text().split("\n"))
    start_line = min(max(0, n_lines - lines), n_lines * 2 // 5)
    base = {"model": model} if model else {}
    fast, asked, cold_ms, rss_mb = asyncio.run(replay(path, start_line, lines, base, None))
    slow_options = {**base, "completion": {"kvReuse": False, "typedAhead": False}}
    slow, _, _, _ = asyncio.run(replay(path, start_line, lines, slow_options, NO_REUSE_MAX_REQUESTS))
    fast_ms = [s.latency_ms for s in fast.steps]
    slow_ms = [s.latency_ms for s in slow.steps]
    p50, p95 = percentile(fast_ms, 50), percentile(fast_ms, 95)
    p50_slow, p95_slow = percentile(slow_ms, 50), percentile(slow_ms, 95)
    return {
        "p50_ms": round(p50, 1),
        "p95_ms": round(p95, 1),
        "p50_ms_no_reuse": round(p50_slow, 1),
        "p95_ms_no_reuse": round(p95_slow, 1),
        "speedup_p50": round(p50_slow / max(p50, 1e-6), 1),
        "cold_start_ms": round(cold_ms, 1),
        "rss_mb": round(rss_mb, 1),
        "requests": len(fast_ms),
        "requests_no_reuse": len(slow_ms),
        "accepted": sum(s.action == "accepted" for s in fast.steps),
        # Asked for explicitly (cycling): the suggestion plus up to completion.alternatives more.
        "asked_p50_ms": round(percentile([ms for _, ms in asked], 50), 1),
        "asked_p95_ms": round(percentile([ms for _, ms in asked], 95), 1),
        "asked_mean_items": round(sum(n for n, _ in asked) / max(len(asked), 1), 2),
        "file": str(path),
        "lines": lines,
    }


def main(args) -> int:
    path = Path(args.file) if args.file else DEFAULT_FILE
    result = run(path, args.lines, args.model)
    print_result(result, args.json)
    return 0
