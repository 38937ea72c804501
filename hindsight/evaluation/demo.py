"""`hindsight demo`: the main job for a newcomer, on the embedded model, in a few minutes.

Starts the real server as a subprocess, opens the sample workspace over real LSP, removes the second half
of a file and has a simulated developer type it back at a human pace: every suggestion and what the
developer did with it is printed; the stats of the database the server wrote are returned (the command
prints them as `hindsight stats` does).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console

from hindsight.collector.store import Store
from hindsight.simulate.session import Session
from hindsight.simulate.simulator import SimulatedDeveloper, Step

WORKSPACE = Path(__file__).resolve().parents[2] / "tests" / "workspace"
# (file, language id, first line typed back, 0-based): the developer removes the rest and types it again.
FILES = [("shapes/geometry.py", "python", 21), ("web/report.js", "javascript", 3)]


def _show(console: Console, step: Step) -> None:
    colour = {"accepted": "green", "partial": "yellow", "typed_over": "red", "empty": "dim"}[step.action]
    shown = step.suggestion.replace("\n", "⏎") or "(nothing)"
    extra = f" [{len(step.accepted)} chars]" if step.action == "partial" else ""
    console.print(f"[{colour}]{step.action:>10}[/] {step.latency_ms:7.0f} ms  {shown[:90]}{extra}", highlight=False)


async def _type_file(session: Session, root: Path, name: str, language: str, first: int, lines: int | None, console):
    path = root / name
    original = path.read_text()
    all_lines = original.split("\n")
    end = len(all_lines) if lines is None else min(len(all_lines), first + lines)
    head = "\n".join(all_lines[:first]) + "\n"
    target = "\n".join(all_lines[first:end])
    tail = original[len(head) + len(target) :]
    console.print(f"\n[bold]{name}[/]: typing {end - first} lines back")
    doc = await session.open(path, head + tail, language)
    dev = SimulatedDeveloper(session, doc, len(head), target, pace_s=0.02, on_step=lambda s: _show(console, s))
    replay = await dev.run()
    if doc.text == original:
        console.print("[green]the file was typed back exactly[/]")
    return replay


async def _run(model: str | None, lines: int | None, console: Console) -> dict:
    work = Path(tempfile.mkdtemp(prefix="hindsight-demo-"))
    try:
        root = work / "workspace"
        shutil.copytree(WORKSPACE, root)
        db = work / "hindsight.db"
        options = {"databasePath": str(db)}
        if model:
            options["model"] = model
        console.print("[bold]hindsight demo[/]: a simulated developer types code back through the real server")
        started = time.perf_counter()
        session = await Session.start(root, options=options, log_file=work / "server.log")
        try:
            replays = [
                await _type_file(session, root, name, language, first, lines, console)
                for name, language, first in FILES
            ]
            for message in session.messages:
                console.print(f"[red]server said:[/] {message}")
        finally:
            await session.close()
        took = time.perf_counter() - started
        requests = sum(len(r.steps) for r in replays)
        accepted = sum(r.accepted_chars for r in replays)
        total = accepted + sum(r.typed_chars for r in replays)
        console.print(
            f"\n{requests} requests in {took:.0f} s; {accepted} of {total} characters came from accepted suggestions"
        )
        with Store(db) as store:
            return store.stats()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_demo(model: str | None = None, lines: int | None = None) -> dict:
    """The demo, printed as it goes; the stats of the database the server wrote."""
    console = Console(stderr=False, highlight=False)
    return asyncio.run(_run(model, lines, console))
