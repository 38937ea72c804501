"""BM25 latency: rank_bm25's BM25Okapi against hindsight.retrieval.bm25.BM25Index on ~50k lines of the standard library.

Chunks are 12-line windows; a query is the last 10 non-empty lines before a random line; an update
replaces one file's chunks after inserting a line into it. Also checks that both give the same scores.

    .venv/bin/hindsight bench bm25
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

import numpy as np

from hindsight.retrieval.bm25 import BM25Index, tokenize

PACKAGES = [
    "asyncio", "email", "importlib", "json", "http", "xml", "multiprocessing", "concurrent", "unittest", "logging"
]
TARGET_LINES = 50_000
CHUNK_LINES = 12
QUERY_LINES = 10


def stdlib_files(target_lines: int = TARGET_LINES) -> dict[str, list[str]]:
    """Path → lines of standard-library Python files, package by package, until `target_lines`."""
    root = os.path.dirname(os.__file__)
    files: dict[str, list[str]] = {}
    total = 0
    for package in PACKAGES:
        for folder, _, names in sorted(os.walk(os.path.join(root, package))):
            for name in sorted(n for n in names if n.endswith(".py")):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8", errors="replace") as f:
                    files[os.path.relpath(path, root)] = lines = f.read().splitlines()
                total += len(lines)
                if total >= target_lines:
                    return files
    return files


def chunks(path: str, lines: list[str]) -> list[tuple[tuple[str, int], str]]:
    return [((path, start), "\n".join(lines[start : start + CHUNK_LINES])) for start in range(0, len(lines), CHUNK_LINES)]


def query_before(lines: list[str], line: int) -> str:
    picked = [text for text in lines[max(0, line - 200) : line] if text.strip()]
    return "\n".join(picked[-QUERY_LINES:])


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return (time.perf_counter() - start) * 1000, result


def pcts(ms: list[float]) -> str:
    return f"p50 {np.percentile(ms, 50):6.2f} ms   p95 {np.percentile(ms, 95):6.2f} ms   max {max(ms):6.2f} ms"


def main(n_queries: int = 300, n_updates: int = 300, seed: int = 0) -> None:
    """`hindsight bench bm25`: the timings and the parity check, printed as they come."""
    from rank_bm25 import BM25Okapi  # the benchmark extra's: imported where it is used

    rng = random.Random(seed)
    files = stdlib_files()
    docs = {key: tokenize(text) for path, lines in files.items() for key, text in chunks(path, lines)}
    print(f"corpus: {len(files)} files, {sum(map(len, files.values()))} lines, {len(docs)} chunks of {CHUNK_LINES} lines")

    build_ms, index = timed(lambda: _build(docs))
    ref_build_ms, ref = timed(lambda: BM25Okapi(list(docs.values())))
    print(f"build: ours {build_ms:.0f} ms, rank-bm25 {ref_build_ms:.0f} ms (tokenized beforehand)")

    paths = [p for p in files if len(files[p]) > 20]
    points = [(path, rng.randrange(10, len(files[path]))) for path in (rng.choice(paths) for _ in range(n_queries))]
    queries = [(path, query_before(files[path], line)) for path, line in points]
    tokenize_ms = [timed(lambda q=q: tokenize(q))[0] for _, q in queries]
    token_queries = [(path, tokenize(q)) for path, q in queries]

    keys = list(docs)
    ref_ms, ours_ms = [], []
    for path, query in token_queries:
        ms, expected = timed(lambda: ref.get_scores(query))
        ref_ms.append(ms)
        ms, _ = timed(lambda: index.top(query, 10, exclude=lambda key: key[0] == path))
        ours_ms.append(ms)
        got = index.scores(query)
        assert np.allclose([got.get(key, 0.0) for key in keys], expected, rtol=1e-9), "scores differ from rank-bm25"
    print(f"tokenize query:          {pcts(tokenize_ms)}")
    print(f"rank-bm25 get_scores:    {pcts(ref_ms)}")
    print(f"ours top(10), first:     {pcts(ours_ms)}   (folds in the postings built since indexing)")
    again_ms = [timed(lambda: index.top(query, 10, exclude=lambda key: key[0] == path))[0] for path, query in token_queries]
    print(f"ours top(10), again:     {pcts(again_ms)}")

    update_ms, retokenize_ms, after_ms, sizes = [], [], [], []
    for i in range(n_updates):
        path = rng.choice(list(files))
        lines = files[path]
        at = rng.randrange(len(lines) + 1)
        files[path] = lines = lines[:at] + [f"    edited_value_{i} = computeTotal(items, {i})"] + lines[at:]
        ms, new = timed(lambda: [(key, tokenize(text)) for key, text in chunks(path, lines)])
        retokenize_ms.append(ms)
        old = [key for key in docs if key[0] == path]
        update_ms.append(timed(lambda: _replace(index, old, new))[0])
        sizes.append(len(new))
        for key in old:
            del docs[key]
        docs.update(new)
        query_path, query = token_queries[i % len(token_queries)]
        after_ms.append(timed(lambda: index.top(query, 10, exclude=lambda key: key[0] == query_path))[0])
    print(f"update (index only):     {pcts(update_ms)}   ({int(np.median(sizes))} chunks median, {max(sizes)} max)")
    small = [ms for ms, size in zip(update_ms, sizes) if size <= 40]
    print(f"update, files <= 40 chunks ({len(small)}): {pcts(small)}")
    print(f"update's tokenize:       {pcts(retokenize_ms)}")
    print(f"top(10) after an update: {pcts(after_ms)}")

    keys = list(docs)
    ref = BM25Okapi([docs[key] for key in keys])
    for _, query in token_queries[:50]:
        got = index.scores(query)
        assert np.allclose([got.get(key, 0.0) for key in keys], ref.get_scores(query), rtol=1e-9), "drift after updates"
    print("parity with rank-bm25: ok (before and after the updates)")


def _build(docs: dict) -> BM25Index:
    index = BM25Index()
    for key, tokens in docs.items():
        index.add(key, tokens)
    return index


def _replace(index: BM25Index, old: list, new: list) -> None:
    for key in old:
        index.remove(key)
    for key, tokens in new:
        index.add(key, tokens)


if __name__ == "__main__":
    main()
