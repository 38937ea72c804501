"""`hindsight simulate REPO`: a simulated developer writes code back into a real repository's files.

This is where the acceptance gate's training data comes from before a real user has any: for each of
`--files` source files of the repository it removes code at `--sites` edit sites (statements inside
function bodies, found with tree-sitter) and types it back at a human pace, with pauses, through the real
server process over a real LSP connection. The server runs with the repository as its workspace root (so
the cross-file index is built, as for a user) and records into `--db`; every outcome in it arrives through
the messages an editor sends (didShow, the accept command, didPartiallyAccept, didReject, typing over,
didClose), so the database has the same shape as a real user's. The same seed picks the same files and
sites and types them with the same rhythm; what the model suggests decides the rest.

    hindsight simulate path/to/repo --files 20 --sites 2 --seed 0
    hindsight simulate path/to/repo --files 3 --json --db /tmp/sim.db

The default database is `simulated.db` in the data directory, never the user's own; runs append to it.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from lsprotocol import types

from hindsight.errors import UsageError
from hindsight.retrieval.workspace import read_source, source_files
from hindsight.simulate.session import Session
from hindsight.simulate.simulator import DISMISS_RATE, SimulatedDeveloper, Step
from hindsight.syntax import TABLE, language_for, parse

MIN_LINES = 30  # shorter files have too little around the edit to be a fair test
MAX_LINES = 3000  # longer ones mostly cost prompt time
MAX_BYTES = 1_000_000  # the index's own limit
SITE_LINES = (2, 15)  # an edit site spans this many lines, both included
INDEX_WAIT_S = 300.0

# Our language name → the LSP languageId an editor sends for it.
LSP_LANGUAGE_IDS = {language.name: language.lsp_ids[0] for language in TABLE}

# Syntax nodes whose `body` is a function's code, in the nine grammars.
FUNCTION_NODES = {
    "function_definition",  # python, c, cpp
    "function_declaration",  # javascript, typescript, go
    "function_expression",
    "function",  # older javascript grammars
    "generator_function_declaration",
    "generator_function",
    "arrow_function",
    "method_definition",  # javascript, typescript
    "method_declaration",  # go, java
    "func_literal",  # go
    "function_item",  # rust
    "closure_expression",
    "constructor_declaration",  # java
    "lambda_expression",  # java, cpp
}
# Nodes that hold a sequence of statements.
BLOCK_NODES = {"block", "statement_block", "compound_statement", "constructor_body"}


class SimulateError(UsageError):
    """Nothing to simulate on (no such repository, no usable file): one line for the user."""


@dataclass(frozen=True)
class Site:
    """Code removed from a file for the developer to type back.

    `target` runs from the first statement's first character (its line's indentation stays in the
    document, as after the editor's auto-indent) to the end of the last removed line.
    """

    start_line: int  # 0-based, first removed line
    end_line: int  # 0-based, last removed line (included)
    offset: int  # where `target` starts in the file's text
    target: str

    def document(self, text: str) -> str:
        """The file's text with the site's code removed."""
        return text[: self.offset] + text[self.offset + len(self.target) :]


def _statements(block) -> list:
    """A block's statements (Go wraps them in a statement_list)."""
    out = []
    for child in block.named_children:
        if child.type == "statement_list":
            out.extend(child.named_children)
        else:
            out.append(child)
    return out


def _blocks_in_functions(root) -> list:
    """The statement blocks of functions' code (bodies and the blocks nested in them), in document order."""
    blocks = []
    stack = [(root, False)]  # (node, inside a function's body)
    while stack:
        node, inside = stack.pop()
        if inside and node.type in BLOCK_NODES:
            blocks.append(node)
        body = node.child_by_field_name("body") if node.type in FUNCTION_NODES else None
        for child in node.named_children:
            stack.append((child, inside or (body is not None and child.id == body.id)))
    return sorted(blocks, key=lambda n: n.start_byte)


def candidate_sites(text: str, language: str) -> list[Site]:
    """Every run of consecutive statements of a function's code that could be an edit site, sorted.

    A run starts a line (only indentation before it), ends one (only whitespace after it), starts and
    ends with a statement rather than a comment, and spans SITE_LINES lines.
    """
    tree = parse(text, language)
    if tree is None:
        return []
    lines = text.split("\n")
    raw = [line.encode("utf-8", "surrogatepass") for line in lines]
    line_starts = [0]
    for line in lines:
        line_starts.append(line_starts[-1] + len(line) + 1)
    lo, hi = SITE_LINES
    found: dict[tuple[int, int], Site] = {}
    for block in _blocks_in_functions(tree.root_node):
        statements = _statements(block)
        for i, first in enumerate(statements):
            row, col = first.start_point
            if first.type == "comment" or raw[row][:col].strip():
                continue
            for last in statements[i:]:
                end_row, end_col = last.end_point
                if end_row - row + 1 > hi:
                    break
                if last.type == "comment" or raw[end_row][end_col:].strip() or end_row - row + 1 < lo:
                    continue
                if (row, end_row) in found:
                    continue
                indent = len(lines[row]) - len(lines[row].lstrip())
                offset = line_starts[row] + indent
                target = text[offset : line_starts[end_row] + len(lines[end_row])]
                if target.strip():
                    found[(row, end_row)] = Site(row, end_row, offset, target)
    return [found[key] for key in sorted(found)]


def choose_sites(text: str, language: str, n: int, rng: random.Random) -> list[Site]:
    """Up to `n` edit sites that share no line, in document order; the same rng state, the same sites."""
    candidates = candidate_sites(text, language)
    rng.shuffle(candidates)
    chosen: list[Site] = []
    for site in candidates:
        if len(chosen) == n:
            break
        if all(site.end_line < other.start_line or site.start_line > other.end_line for other in chosen):
            chosen.append(site)
    return sorted(chosen, key=lambda s: s.start_line)


def read_file(path: Path, min_lines: int = MIN_LINES, max_lines: int = MAX_LINES) -> str | None:
    """The file's text (newlines normalized), or None when it is no fit for the simulation."""
    text, _why = read_source(path, MAX_BYTES)  # the index's rules: binary, generated, minified, huge
    if text is None:
        return None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not min_lines <= text.count("\n") + 1 <= max_lines:
        return None
    if any(ord(ch) > 0xFFFF for ch in text):
        return None  # LSP positions count UTF-16 units; the session counts code points
    return text


def candidate_files(root: Path, min_lines: int = MIN_LINES, max_lines: int = MAX_LINES) -> list[Path]:
    """The repository's source files (.gitignore and the index's skip rules honoured), sorted."""
    return sorted(
        path
        for path in source_files(root)
        if language_for(path.name) is not None and read_file(path, min_lines, max_lines) is not None
    )


@dataclass
class Plan:
    path: Path
    language: str
    text: str
    sites: list[Site]


def plan(
    root: Path, files: int, sites: int, seed: int, min_lines: int = MIN_LINES, select: Callable[[str], bool] | None = None
) -> list[Plan]:
    """The files (in a seeded order, the first `files` that have a site) and each one's sites; `select`
    (given a file's path relative to `root`) keeps only some files."""
    paths = candidate_files(root, min_lines)
    if select is not None:
        paths = [p for p in paths if select(p.relative_to(root).as_posix())]
    rng = random.Random(seed)
    rng.shuffle(paths)
    plans = []
    for path in paths:
        if len(plans) == files:
            break
        language = language_for(path.name)
        text = read_file(path, min_lines)
        if language is None or text is None:
            continue
        rel = path.relative_to(root).as_posix()
        chosen = choose_sites(text, language, sites, random.Random(f"{seed}:{rel}"))
        if chosen:
            plans.append(Plan(path, language, text, chosen))
    return plans


async def _wait_for_index(session: Session, timeout_s: float = INDEX_WAIT_S) -> None:
    """Until the server's workspace index is built, so every site gets cross-file context."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = await session.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="hindsight.status", arguments=[])
        )
        index = status.get("index") if isinstance(status, dict) else getattr(status, "index", None)
        if index is not None or any("indexing failed" in m for m in session.messages):
            return
        await asyncio.sleep(0.25)


def summarize(steps: list[Step], typed: int, accepted_chars: int) -> dict[str, Any]:
    shown = [s for s in steps if s.action != "empty"]
    accepted = sum(s.action == "accepted" for s in steps)
    return {
        "requests": len(steps),
        "shown": len(shown),
        "accepted": accepted,
        "partial": sum(s.action == "partial" for s in steps),
        "rejected": sum(s.action in ("typed_over", "dismissed") for s in steps),
        "acceptance_rate": round(accepted / len(shown), 3) if shown else 0.0,
        # Mean edit similarity (0-100) of the shown suggestions to the text about to be typed.
        "es": round(100 * sum(s.similarity or 0.0 for s in shown) / len(shown), 2) if shown else 0.0,
        "typed_chars": typed,
        "accepted_chars": accepted_chars,
    }


async def simulate(
    repo: Path,
    *,
    files: int,
    sites: int,
    seed: int,
    db: Path,
    pace_ms: float,
    options: dict | None = None,
    log_file: Path | None = None,
    min_lines: int = MIN_LINES,
    dismiss_rate: float = DISMISS_RATE,
    steps: list[Step] | None = None,
    select: Callable[[str], bool] | None = None,
    by_site: dict[str, list[Step]] | None = None,
    env: dict[str, str] | None = None,
    after: Callable[[Session], Awaitable[Any]] | None = None,
) -> dict[str, Any]:
    """Run the simulation; the summary. `options` go into initializationOptions (`db` wins over theirs).

    `steps`, when given, receives every request's Step (the tests compare them with the database);
    `select` keeps only some files (see `plan`); `by_site`, when given, receives each site's Steps under
    `path:k` (the bench's interval resamples sites); `env`: more environment for the server; `after`, when
    given, is awaited with the session once the last site is typed, before the server is shut down (what
    it returns is the summary's `after`).
    """
    t0 = time.perf_counter()
    repo = Path(repo)
    if files < 1 or sites < 1:
        raise SimulateError("--files and --sites must be at least 1")
    if not repo.is_dir():
        raise SimulateError(f"no such repository (a directory): {repo}")
    repo = repo.resolve()
    plans = plan(repo, files, sites, seed, min_lines, select)
    if not plans:
        raise SimulateError(
            f"{repo} has no usable source file ({min_lines}–{MAX_LINES} lines, in a supported language, "
            "with a function body to edit)"
        )
    db = Path(db)
    db.parent.mkdir(parents=True, exist_ok=True)
    server_options = {**(options or {}), "databasePath": str(db.resolve())}
    all_steps: list[Step] = [] if steps is None else steps
    typed = accepted_chars = n_sites = 0
    session = await Session.start(repo, options=server_options, log_file=log_file, env=env)
    afterwards = None
    try:
        context = server_options.get("context")
        if not (isinstance(context, dict) and context.get("crossFile") is False):
            await _wait_for_index(session)
        for p in plans:
            rel = p.path.relative_to(repo).as_posix()
            for k, site in enumerate(p.sites):
                doc = await session.open(p.path, site.document(p.text), LSP_LANGUAGE_IDS[p.language])
                dev = SimulatedDeveloper(
                    session,
                    doc,
                    site.offset,
                    site.target,
                    rng=random.Random(f"{seed}:{rel}:{k}"),
                    pace_ms=pace_ms,
                    dismiss_rate=dismiss_rate,
                    on_step=all_steps.append,
                )
                first = len(all_steps)
                replay = await dev.run()
                if by_site is not None:
                    by_site[f"{rel}:{k}"] = all_steps[first:]
                session.client.text_document_did_close(
                    types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=doc.uri))
                )
                typed += replay.typed_chars
                accepted_chars += replay.accepted_chars
                n_sites += 1
        # A request round trip after the last notifications: the server has handled them all.
        await session.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="hindsight.status", arguments=[])
        )
        if after is not None:
            afterwards = await after(session)
    finally:
        await session.close()
    return {
        "files": len(plans),
        "sites": n_sites,
        **summarize(all_steps, typed, accepted_chars),
        "seconds": round(time.perf_counter() - t0, 1),
        "db": str(db),
        **({"after": afterwards} if after is not None else {}),
    }
