"""`hindsight bench storm`: a typing storm through the real server; stale work dropped, memory flat.

Starts the real server (`python -m hindsight serve` over stdio, the client of `hindsight/simulate/session.py`)
on a real workspace (default: the standard library's `email` package), opens several of its files, and
in each deletes a function body. For `--seconds` it then types those bodies back, one keystroke at a
time round-robin across the documents, at `--rate` keystrokes a second: every keystroke is a didChange
and an automatic inline completion request, sent without waiting for the answers, so requests pile up
and the server has to drop the stale ones ("newest request wins"). Every request must be answered; each
answer is counted by kind and timed from send to answer. The server's RSS is sampled once the model is
warm (start), every few seconds (max; slope over the storm's second half, once the first has filled the
server's caches and allocator) and once every answer is in (end). After the storm each document is asked
once more, as an editor does when the typing stops. The acceptance gate is off unless `--gate`: every
request that is not superseded first reaches the model, the worst case.

    hindsight bench storm                                   # 60 s at 20 keys/s over 4 documents
    hindsight bench storm --json                            # the numbers docs/BENCHMARKS.md records
    hindsight bench storm path/to/package --seconds 10 --rate 40 --documents 2
"""

from __future__ import annotations

import ast
import asyncio
import json
import shutil
import sqlite3
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lsprotocol import types
from pygls.exceptions import JsonRpcContentModified, JsonRpcRequestCancelled

from hindsight.collector.store import percentile
from hindsight.errors import UsageError
from hindsight.simulate.session import Document, Session
from hindsight.simulate.simulator import next_keystroke

DEFAULT_REPO = Path(sysconfig.get_paths()["stdlib"]) / "email"
SAMPLE_S = 2.0  # RSS sampling period during the storm
DRAIN_S = 120.0  # how long the answers may take to come in once the typing stops
IGNORE = shutil.ignore_patterns("__pycache__", "test*", ".git", "node_modules", ".venv")


class StormError(UsageError):
    """A workspace the storm cannot type in (no Python function bodies to retype): one line."""


@dataclass
class Site:
    """A function body removed from a file: the document is `head + tail`, `target` is typed back."""

    path: Path
    head: str
    target: str
    tail: str


def body_site(path: Path, chars: int) -> Site | None:
    """The first function body from 40 % into the file that holds `chars` characters (else the longest),
    cut from its first statement after the docstring, its indentation left in place."""
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    lines = text.split("\n")
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    bodies = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
            body = body[1:]  # keep the docstring: it is what a developer writes first
        if not body or body[0].lineno == node.lineno:
            continue  # empty, or on the def's own line
        first, end_line = body[0], node.end_lineno or body[-1].end_lineno
        start = starts[first.lineno - 1] + first.col_offset
        end = starts[end_line - 1] + len(lines[end_line - 1])
        bodies.append((first.lineno, start, end))
    if not bodies:
        return None
    bodies.sort()
    later = [b for b in bodies if b[0] >= len(lines) * 2 // 5 and b[2] - b[1] >= chars]
    _, start, end = later[0] if later else max(bodies, key=lambda b: b[2] - b[1])
    return Site(path, text[:start], text[start:end], text[end:])


def pick_sites(root: Path, documents: int, chars: int) -> list[Site]:
    """`documents` files of the workspace, largest first, each with a function body to retype."""
    files = sorted(
        (p for p in root.rglob("*.py") if p.is_file()), key=lambda p: (-p.stat().st_size, str(p))
    )
    sites = []
    for path in files:
        site = body_site(path, chars)
        if site is not None and len(site.target) >= 20:
            sites.append(site)
        if len(sites) == documents:
            return sites
    raise StormError(f"{root} has {len(sites)} Python files with a function body to retype; {documents} wanted")


class Typist:
    """Types one site's body back into its open document, a keystroke at a time; when the body is
    all typed, deletes it (one change) and starts again, so a storm of any length stays in place."""

    def __init__(self, session: Session, doc: Document, site: Site):
        self.session, self.doc, self.site = session, doc, site
        self.start = len(site.head)
        self.typed = 0

    @property
    def offset(self) -> int:
        return self.start + self.typed

    def key(self) -> None:
        if self.typed >= len(self.site.target):
            self.session.insert(self.doc, self.start, "", remove=self.typed)
            self.typed = 0
        typed = next_keystroke(self.site.target[self.typed :])  # Enter comes with the auto-indent
        self.session.insert(self.doc, self.offset, typed)
        self.typed += len(typed)


@dataclass
class Sent:
    doc: int
    seq: int  # the n-th request sent for its document
    sent: float
    answered: float | None = None
    kind: str | None = None  # shown | empty | null | cancelled | content_modified | error
    newest: bool = False  # no newer request for its document had been sent when the answer came
    error: str | None = None

    @property
    def ms(self) -> float | None:
        return None if self.answered is None else (self.answered - self.sent) * 1000


def classify(future) -> tuple[str, str | None]:
    exc = future.exception()
    if exc is None:
        result = future.result()
        if result is None:
            return "null", None
        items = result.items if isinstance(result, types.InlineCompletionList) else result
        return ("shown" if items else "empty"), None
    code = getattr(exc, "code", None)  # pygls 2.1.1 maps -32800 to its class, -32801 to none
    if code == JsonRpcRequestCancelled.CODE:
        return "cancelled", None
    if code == JsonRpcContentModified.CODE:
        return "content_modified", None
    return "error", f"{type(exc).__name__}: {exc}"


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) samples, in MB a minute."""
    if len(samples) < 2:
        return None
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mm = sum(m for _, m in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    if var == 0:
        return None
    return sum((t - mt) * (m - mm) for t, m in samples) / var * 60


def reached_model(db: Path, since: float, until: float) -> int | None:
    """Requests of the storm whose prompt the model evaluated (the rest were dropped before it, or
    answered from the typed-ahead cache), from the server's own log."""
    try:
        conn = sqlite3.connect(db)
        try:
            rows = conn.execute(
                "SELECT timings_json FROM requests WHERE created_at BETWEEN ? AND ?", (since, until)
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return sum(1 for (t,) in rows if t and "prefill_ms" in json.loads(t))


async def storm(
    repo: Path, *, seconds: float, rate: float, documents: int, gate: bool = False, options: dict | None = None
) -> dict:
    keys = max(1, round(seconds * rate))
    work = Path(tempfile.mkdtemp(prefix="hindsight-storm-"))
    try:
        root = work / "workspace"
        shutil.copytree(repo, root, ignore=IGNORE)
        sites = pick_sites(root, documents, -(-keys // documents))
        db = work / "bench.db"
        session = await Session.start(
            root,
            options={"databasePath": str(db), "gate": {"enabled": gate}, **(options or {})},
            log_file=work / "server.log",
        )
        import psutil  # the benchmark extra's: imported where it is used

        proc = psutil.Process(session.process_pid)

        def rss_mb() -> float | None:
            try:
                return proc.memory_info().rss / 2**20
            except psutil.Error:
                return None

        try:
            typists = []
            for site in sites:
                doc = await session.open(site.path, site.head + site.tail)
                typists.append(Typist(session, doc, site))
            for t in typists:  # warm: the model loaded and each document's prompt seen once
                await session.complete(t.doc, t.offset)
            rss_start = rss_mb()

            sent: list[Sent] = []
            latest = [0] * len(typists)
            samples: list[tuple[float, float]] = []

            def answered(record: Sent, future) -> None:  # on the client's event loop, as is the sending
                record.answered = time.perf_counter()
                record.kind, record.error = classify(future)
                record.newest = latest[record.doc] == record.seq

            async def sample(t0: float) -> None:
                while True:
                    mb = rss_mb()
                    if mb is not None:
                        samples.append((time.perf_counter() - t0, mb))
                    await asyncio.sleep(SAMPLE_S)

            wall_start = time.time()
            t0 = time.perf_counter()
            sampler = asyncio.create_task(sample(t0))
            try:
                for i in range(keys):
                    delay = t0 + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    d = i % len(typists)
                    t = typists[d]
                    t.key()
                    latest[d] += 1
                    record = Sent(d, latest[d], time.perf_counter())
                    sent.append(record)
                    session.send(t.doc, t.offset).add_done_callback(lambda f, r=record: answered(r, f))
                typed_s = time.perf_counter() - t0
                last_key = time.perf_counter()
                deadline = last_key + DRAIN_S
                while any(r.answered is None for r in sent) and time.perf_counter() < deadline:
                    await asyncio.sleep(0.05)
            finally:
                sampler.cancel()
            wall_end = time.time()
            rss_end = rss_mb()
            if rss_end is not None:
                samples.append((time.perf_counter() - t0, rss_end))

            # The typing stops: each document is asked once more, one after another, the last typed in first.
            last = sent[-1].doc
            after = [await session.complete(t.doc, t.offset) for t in typists[last:] + typists[:last]]
            try:
                status = await asyncio.wait_for(
                    session.client.workspace_execute_command_async(
                        types.ExecuteCommandParams(command="hindsight.status", arguments=[])
                    ),
                    30,
                )
                alive = proc.is_running() and status is not None
            except Exception:
                alive = False
        finally:
            await session.close()
        done = [r for r in sent if r.answered is not None]
        newest = [r for r in done if r.newest]
        kinds = ["shown", "empty", "null", "cancelled", "content_modified", "error"]
        count = {k: sum(r.kind == k for r in done) for k in kinds}
        errors = sorted({r.error for r in done if r.error})
        rounded = lambda v, n=1: None if v is None else round(v, n)  # noqa: E731
        last_answer = max((r.answered for r in done), default=last_key)
        return {
            "requests": len(sent),
            "answered": len(done),
            "p50_ms": rounded(percentile([r.ms for r in done], 50)),
            "p95_ms": rounded(percentile([r.ms for r in done], 95)),
            # The answers a user sees: no newer keystroke in that document when they came.
            "newest": len(newest),
            "newest_p50_ms": rounded(percentile([r.ms for r in newest], 50)),
            "newest_p95_ms": rounded(percentile([r.ms for r in newest], 95)),
            "newest_shown": sum(r.kind == "shown" for r in newest),
            "shown": count["shown"],
            "empty": count["empty"],
            "null": count["null"],  # a null result: superseded while its document stayed the same
            "cancelled": count["cancelled"],  # error RequestCancelled
            "content_modified": count["content_modified"],  # error ContentModified
            "errors": count["error"],
            **({"error_messages": errors[:5]} if errors else {}),
            "last_kind": sent[-1].kind,  # the storm's final request: served (shown or empty), not superseded
            "reached_model": reached_model(db, wall_start, wall_end),
            "drain_ms": round((last_answer - last_key) * 1000, 1),
            "after_shown": sum(item is not None for item, _ in after),
            "after_max_ms": round(max(ms for _, ms in after), 1),
            "server_alive": alive,
            "rss_start_mb": rounded(rss_start),
            "rss_end_mb": rounded(rss_end),
            "rss_max_mb": rounded(max((mb for _, mb in samples), default=None)),
            "rss_slope_mb_per_min": rounded(slope_mb_per_min([s for s in samples if typed_s / 2 <= s[0] <= typed_s]), 2),
            "seconds": round(typed_s, 1),
            "rate": rate,
            "rate_achieved": round((len(sent) - 1) / typed_s, 1) if len(sent) > 1 else None,
            "documents": len(typists),
            "gate": gate,
            "files": [str(t.site.path.relative_to(root)) for t in typists],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(repo: Path, seconds: float, rate: float, documents: int, model: str | None = None, gate: bool = False) -> dict:
    if not repo.is_dir():
        raise StormError(f"{repo} is not a directory")
    if seconds <= 0 or rate <= 0 or documents < 1:
        raise StormError("--seconds and --rate must be positive and --documents at least 1")
    return asyncio.run(storm(repo, seconds=seconds, rate=rate, documents=documents, gate=gate,
                             options={"model": model} if model else None))


def main(*, repo: Path | None, seconds: float, rate: float, documents: int, gate: bool, model: str | None) -> dict:
    """`hindsight bench storm`: the storm in `repo` (default: the standard library's email package)."""
    return run(repo or DEFAULT_REPO, seconds, rate, documents, model, gate)
