"""Cross-file context on a real repository, CrossCodeEval-style: does context from other files help the
model finish lines that use another file's definitions?

Points: lines that use an identifier defined in another file of the repository (defined in at most
three other files, not in the line's own file, not an import line), the cursor at the start of that
identifier, the target the rest of the line. The document is the file up to the cursor (left context
only, as CrossCodeEval). The index holds the whole repository; retrieval never uses the cursor's own
file. Three modes, same model, greedy, the unsure-token stop off (whole lines, as CrossCodeEval
scores them):

- `infile`: no cross-file context;
- `bm25`: the chunks of other files most like the last 10 non-empty lines before the cursor;
- `bm25+graph`: first the definitions the identifiers near the cursor resolve to through the file's
  imports, then the BM25 chunks.

Exact match (stripped) and edit similarity (1 − Levenshtein / longer length, × 100) per mode; the
retrieval query's p50/p95 (bm25+graph); the incremental update p95 (one changed file re-indexed);
the index's build time from scratch (no cache).

    .venv/bin/hindsight bench repo /usr/lib/python3.11/asyncio --points 100 --json
"""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress

from collector.store import percentile
from engine.engine import CompletionRequest, Engine, EngineConfig
from retrieval.context import ContextOptions, retrieve
from retrieval.workspace import WorkspaceIndex

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
IMPORT_LINE = re.compile(r"\s*(import|from|#\s*include|use|package|export\s+\*\s+from)\b")
MODES = {"infile": None, "bm25": ContextOptions(graph=False), "bm25+graph": ContextOptions()}


@dataclass
class Point:
    path: str
    line: int
    character: int
    target: str


def edit_similarity(a: str, b: str) -> float:
    if not a and not b:
        return 1.0
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return 1 - previous[-1] / max(len(a), len(b))


def find_points(index: WorkspaceIndex, texts: dict[str, str], n: int, seed: int) -> list[Point]:
    candidates = []
    for rel, info in sorted(index.files.items()):
        own = {d.name for d in info.definitions}
        for number, text in enumerate(texts[rel].split("\n")):
            if number < 3 or IMPORT_LINE.match(text) or text.lstrip().startswith(("#", "//", "*", "/*")):
                continue
            for match in IDENT.finditer(text):
                name = match.group()
                others = {d.path for d in index.by_name.get(name, []) if d.path != rel}
                target = text[match.start() :].rstrip()
                if len(name) >= 3 and name not in own and 0 < len(others) <= 3 and len(target) >= 4:
                    candidates.append(Point(rel, number, match.start(), target))
                    break  # one point per line
    picked = random.Random(seed).sample(candidates, min(n, len(candidates)))
    return sorted(picked, key=lambda p: (p.path, p.line))


def run(root: Path, n_points: int, seed: int, model: str | None, progress: Progress | None = None) -> dict:
    from engine.llama_backend import LlamaBackend
    from engine.model import resolve_model

    index = WorkspaceIndex(root)
    task = progress.add_task("indexing", total=None) if progress else None
    stats = index.build(lambda done, total: progress.update(task, completed=done, total=total) if progress else None)
    texts = {rel: (index.root / rel).read_text() for rel in index.files}
    points = find_points(index, texts, n_points, seed)

    # Incremental update: one file changed, re-indexed (and changed back), for up to 50 files.
    update_ms = []
    for rel in sorted(texts)[:50]:
        for text in (texts[rel] + "\n# edited\n", texts[rel]):
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
        "update_p95_ms": round(percentile(update_ms, 95), 2),
        "modes": results,
        "repo": str(root),
    }


def main(args) -> int:
    with Progress(transient=True) as progress:
        result = run(Path(args.path), args.points, args.seed, args.model, progress)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>16}  {value}")
    return 0
