"""Anchors: lines of general code on which a refresh must keep predicting what the base model predicted.

DPO on one project's rejections moves the model on all code: measured on idlelib's pairs, an adapter
that raised held-out acceptance by 37% cost 5 points of HumanEval single-line infilling (docs/
BENCHMARKS.md, refresh). The trainer (hindsight/refresh/dpo.py) adds, at each step, the KL divergence from the
base model's next-token distribution to the adapted one's along a few lines of code from elsewhere: the
Python standard library's multi-file packages, which every machine that runs hindsight has. Files under
the user's own repositories are never used (their code is what the pairs teach). Measured (docs/
BENCHMARKS.md, refresh: anchors): at weight 5 the loss on all 1,033 single-line tasks is 2.2 points, the
replay's gain kept; it narrows the loss, it does not close it.
"""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path
from typing import Iterable

# The standard library's multi-file packages: the cold start's (hindsight/simulate/cold_start.py), and five more.
PACKAGES = ("json", "email", "importlib", "http", "logging", "concurrent", "urllib", "xml", "unittest",
            "multiprocessing", "asyncio", "sqlite3", "collections", "ctypes", "tomllib", "zoneinfo", "wsgiref")
MAX_FILE_BYTES = 200_000


def stdlib_files(exclude: Iterable[str | Path] = (), packages: tuple[str, ...] = PACKAGES) -> list[Path]:
    """The packages' .py files (tests left out), sorted, none under an `exclude` directory."""
    root = Path(sysconfig.get_paths()["stdlib"])
    excluded = [Path(p).resolve() for p in exclude if p]
    files = []
    for name in packages:
        for path in sorted((root / name).rglob("*.py")):
            resolved = path.resolve()
            if "test" in path.relative_to(root).parts[1:-1] or path.name.startswith("test"):
                continue
            if any(resolved == e or e in resolved.parents for e in excluded):
                continue
            if path.stat().st_size <= MAX_FILE_BYTES:
                files.append(path)
    return files


def anchor_texts(count: int, *, exclude: Iterable[str | Path] = (), seed: int = 0,
                 files: list[Path] | None = None) -> list[tuple[str, str]]:
    """`count` (prefix, line) pairs: a random code line of a random file, and the file's text before it.
    Lines worth predicting only: at least 8 characters of code, not comments."""
    rng = random.Random(seed)
    files = stdlib_files(exclude) if files is None else files
    out: list[tuple[str, str]] = []
    tries = 0
    while files and len(out) < count and tries < count * 20:
        tries += 1
        try:
            text = rng.choice(files).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        lines = text.splitlines(keepends=True)
        if len(lines) < 20:
            continue
        i = rng.randrange(10, len(lines))
        line = lines[i].rstrip("\n")
        code = line.strip()
        if len(code) < 8 or code.startswith(("#", '"', "'")):
            continue
        out.append(("".join(lines[:i]), line))
    return out
