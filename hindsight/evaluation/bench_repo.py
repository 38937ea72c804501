"""Cross-file context on a real repository, CrossCodeEval-style: does context from other files help the
model finish lines that use another file's definitions?

Points: lines that use a top-level definition of another file of the repository through the file's
imports, by name (`from m import name`) or through a module (`m.name`): what CrossCodeEval's static
analysis selects; not an import line, not a comment) and that does not appear earlier in the file (as CrossCodeEval requires:
the text before the cursor cannot tell the model the name), the cursor at the start of that identifier,
the target the rest of the line. At most PER_FILE points from one file. The document is the file up to the cursor (left context
only, as CrossCodeEval). The index holds the whole repository; retrieval never uses the cursor's own
file. Three modes, same model, greedy, the unsure-token stop off (whole lines, as CrossCodeEval
scores them):

- `infile`: no cross-file context;
- `bm25`: the chunks of other files most like the last 10 non-empty lines before the cursor;
- `bm25+graph`: first the definitions the identifiers near the cursor resolve to through the file's
  imports, then the BM25 chunks.

Exact match (stripped) and edit similarity (1 − Levenshtein / longer length, × 100) per mode; the
retrieval query's p50/p95 (bm25+graph); the incremental update p95 (one changed file re-indexed);
the update p50/p95 (a line typed into the middle of one of 50 random files open in the editor, and
taken out again, each re-indexed); the index's build time from scratch (no cache).

    .venv/bin/hindsight bench repo "$(python3 -c 'import email, os; print(os.path.dirname(email.__file__))')" --json
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress

from hindsight.collector.store import percentile
from hindsight.engine.engine import Engine, EngineConfig
from hindsight.engine.llama_backend import LlamaBackend
from hindsight.engine.model import resolve_model
from hindsight.request import CompletionRequest
from hindsight.retrieval.context import ContextOptions, module_names, resolve_imports, retrieve
from hindsight.retrieval.parse import identifiers_near
from hindsight.retrieval.workspace import WorkspaceIndex
from hindsight.simulate.simulator import edit_similarity
from hindsight.syntax import parse

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
IMPORT_LINE = re.compile(r"\s*(import|from|#\s*include|use|package|export\s+\*\s+from)\b")
PER_FILE = 5
MODES = {"infile": None, "bm25": ContextOptions(graph=False), "bm25+graph": ContextOptions()}


@dataclass
class Point:
    path: str
    line: int
    character: int
    target: str


def typed_line(text: str, language: str) -> str:
    """`text` with a statement typed on a new line in the middle, indented like the line after it: at
    the first line from the middle where that keeps the file free of new syntax errors (between a
    `try` block and its `except`, say, it would not be)."""
    lines = text.split("\n")
    statement = "x = 1  # edited" if language == "python" else "x = 1;  // edited"
    errors = _has_error(text, language)
    for line in list(range(len(lines) // 2, min(len(lines), len(lines) // 2 + 200))) + [len(lines) // 2]:
        indent = lines[line][: len(lines[line]) - len(lines[line].lstrip())]
        edited = "\n".join(lines[:line] + [indent + statement] + lines[line:])
        if errors or not _has_error(edited, language):
            break
    return edited


def _has_error(text: str, language: str) -> bool:
    tree = parse(text, language)
    return tree is not None and tree.root_node.has_error


def find_points(index: WorkspaceIndex, texts: dict[str, str], n: int, seed: int) -> list[Point]:
    candidates = []
    for rel, info in sorted(index.files.items()):
        own = {d.name for d in info.definitions}
        resolved = resolve_imports(index, info)
        modules = module_names(resolved)  # module alias → its files
        by_name = {}  # a name imported by name (`from m import name`) → its file(s)
        for imp, files in resolved:
            for name, local in imp.names:
                by_name[local] = [d.path for d in index.by_name.get(name, []) if d.path in files and d.qualname == d.name]
        seen: set[str] = set()  # names used so far in the file (import lines included)
        in_file = []
        for number, text in enumerate(texts[rel].split("\n")):
            code = number >= 3 and not IMPORT_LINE.match(text) and not text.lstrip().startswith(("#", "//", "*", "/*"))
            for match in IDENT.finditer(text) if code else []:
                name, start = match.group(), match.start()
                alias = re.search(r"([A-Za-z_]\w*)\.$", text[:start])
                via_module = alias is not None and any(
                    d.path in modules.get(alias.group(1), []) and d.qualname == d.name for d in index.by_name.get(name, [])
                )
                if name not in own and name not in seen and (by_name.get(name) or via_module):
                    if len(text[start:].rstrip()) >= 4 and name in identifiers_near(text, 0, len(text), info.language, lines_before=0):
                        in_file.append(Point(rel, number, start, text[start:].rstrip()))
                    break  # one point per line
            seen.update(IDENT.findall(text))
        candidates += random.Random(f"{seed}:{rel}").sample(in_file, min(PER_FILE, len(in_file)))
    picked = random.Random(seed).sample(candidates, min(n, len(candidates)))
    return sorted(picked, key=lambda p: (p.path, p.line))


def run(root: Path, n_points: int, seed: int, model: str | None, progress: Progress | None = None) -> dict:

    index = WorkspaceIndex(root)
    task = progress.add_task("indexing", total=None) if progress else None
    stats = index.build(lambda done, total: progress.update(task, completed=done, total=total) if progress else None)
    texts = {rel: (index.root / rel).read_text() for rel in index.files}
    points = find_points(index, texts, n_points, seed)

    # Incremental update: a line typed into the middle of a file open in the editor (its syntax tree
    # was parsed when it was opened), then taken out again, for 50 files picked at random.
    update_ms = []
    for rel in random.Random(seed).sample(sorted(texts), min(50, len(texts))):
        index.opened(rel, texts[rel])
        edited = typed_line(texts[rel], index.files[rel].language)
        for text in (edited, texts[rel]):
            t0 = time.perf_counter()
            index.update(rel, text)
            update_ms.append((time.perf_counter() - t0) * 1000)

    engine = Engine(LlamaBackend(resolve_model(model)), EngineConfig(min_token_prob=0))
    results: dict[str, dict] = {}
    query_ms = []
    for mode, options in MODES.items():
        em = es = 0.0
        task = progress.add_task(mode, total=len(points)) if progress else None
        for point in points:
            lines = texts[point.path].split("\n")
            doc = "\n".join(lines[: point.line] + [lines[point.line][: point.character]])
            context = []
            if options is not None:
                t0 = time.perf_counter()
                context = retrieve(index, point.path, doc, point.line, point.character, options)
                if mode == "bm25+graph":
                    query_ms.append((time.perf_counter() - t0) * 1000)
            req = CompletionRequest(
                uri=f"file:///{point.path}", text=doc, line=point.line, character=point.character,
                language=index.files[point.path].language, path=point.path, context=context,
            )
            prediction = engine.complete(req).text.split("\n")[0]
            guess = lines[point.line][: point.character] + prediction
            truth = lines[point.line][: point.character] + point.target
            em += guess.strip() == truth.strip()
            es += edit_similarity(prediction.strip(), point.target.strip())
            if progress:
                progress.advance(task)
        count = max(len(points), 1)
        results[mode] = {"em": round(em / count, 3), "es": round(100 * es / count, 1)}
    return {
        "points": len(points),
        "files": stats.files,
        "lines": stats.lines,
        "chunks": stats.chunks,
        "index_seconds": round(stats.seconds, 2),
        "query_p50_ms": round(percentile(query_ms, 50), 2),
        "query_p95_ms": round(percentile(query_ms, 95), 2),
        "update_p50_ms": round(percentile(update_ms, 50), 2),
        "update_p95_ms": round(percentile(update_ms, 95), 2),
        "modes": results,
        "repo": str(root),
    }


def main(*, path: Path, points: int, seed: int, model: str | None) -> dict:
    """`hindsight bench repo`: `points` completion points in the repository at `path`, with a progress bar."""
    with Progress(transient=True) as progress:
        return run(path, points, seed, model, progress)
