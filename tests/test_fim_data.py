"""Fill-in-the-middle training data (`hindsight/fim/data.py`, `hindsight build-fim-data`): spans, sources, files."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hindsight.fim.data import KINDS, MAX_MIDDLE_CHARS, MAX_MIDDLE_LINES, build, source_files, spans

PYTHON = textwrap.dedent('''\
    """Shapes and their areas."""

    import math
    from dataclasses import dataclass


    @dataclass
    class Circle:
        radius: float

        def area(self) -> float:
            """The area."""
            return math.pi * self.radius ** 2

        def scaled(self, factor: float) -> "Circle":
            if factor <= 0:
                raise ValueError(f"factor must be positive, got {factor}")
                return None
            return Circle(radius=self.radius * factor)


    def total_area(shapes, default=0.0):
        total = default
        for shape in shapes:
            area = shape.area()
            total += area
        return round(total, 3)
''')

JAVASCRIPT = textwrap.dedent('''\
    'use strict'
    const path = require('node:path')

    class Cache {
      constructor (limit = 10) {
        this.limit = limit
        this.items = new Map()
      }

      get (key) {
        if (!this.items.has(key)) {
          this.misses += 1
          return undefined
        }
        const value = this.items.get(key)
        return value
      }
    }

    function resolveAll (base, names) {
      const out = []
      for (const name of names) {
        out.push(path.join(base, name))
        console.log('resolved', name)
      }
      return out
    }

    module.exports = { Cache, resolveAll }
''')

TYPESCRIPT = textwrap.dedent('''\
    import { join } from "node:path";

    export interface Options {
        root: string;
        depth?: number;
    }

    export class Walker {
        private seen = new Set<string>();

        constructor(private readonly options: Options) {
            this.seen.clear();
        }

        visit(name: string): string | undefined {
            const full = join(this.options.root, name);
            if (this.seen.has(full)) {
                console.warn("seen twice:", full);
                return undefined;
            }
            this.seen.add(full);
            return full;
        }
    }

    export const depthOf = (options: Options): number => {
        const depth = options.depth ?? 1;
        return depth * 2;
    };
''')


@pytest.mark.parametrize("language, text", [("python", PYTHON), ("javascript", JAVASCRIPT), ("typescript", TYPESCRIPT)])
def test_spans_are_valid_and_every_kind_appears(language, text):
    found = spans(text, language, random.Random(0), 400)
    assert {s.kind for s in found} == set(KINDS)
    assert len({(s.start, s.end) for s in found}) == len(found)
    for s in found:
        prefix, middle, suffix = text[: s.start], text[s.start : s.end], text[s.end :]
        assert prefix + middle + suffix == text
        assert middle.strip(), s
        assert len(middle) <= MAX_MIDDLE_CHARS and middle.count("\n") < MAX_MIDDLE_LINES
        if s.kind in ("line", "next_lines", "block_after_signature"):  # whole lines from column 0
            assert prefix == "" or prefix.endswith("\n"), s
            assert suffix == "" or suffix.startswith("\n"), s
        if s.kind == "rest_of_line":
            assert "\n" not in middle and prefix.split("\n")[-1].strip() and (suffix == "" or suffix[0] == "\n")
        if s.kind == "next_lines":
            assert 1 <= middle.count("\n") <= 5
        if s.kind in ("statement", "function_body", "block"):  # the cursor after the indentation
            assert not prefix.split("\n")[-1].strip() and not middle[0].isspace(), s


def test_span_kinds_match_the_syntax():
    found = spans(PYTHON, "python", random.Random(1), 400)
    middles = {kind: {PYTHON[s.start : s.end] for s in found if s.kind == kind} for kind in KINDS}
    assert 'return math.pi * self.radius ** 2' in middles["statement"]
    assert 'shape.area()' in middles["expression"]  # a right-hand side
    assert 'self.radius * factor' in middles["expression"]  # a keyword argument's value
    assert 'area = shape.area()\n        total += area' in middles["block"]  # the for loop's body
    assert '        """The area."""\n        return math.pi * self.radius ** 2' in middles["block_after_signature"]
    assert '"""The area."""\n        return math.pi * self.radius ** 2' in middles["function_body"]
    assert "    total = default" in middles["line"]


def test_spans_skip_what_does_not_parse():
    text = "def ok(x):\n    return x + 1\n\ndef broken(:\n    return ]]\n"
    broken = text.index("def broken")
    for s in spans(text, "python", random.Random(0), 200):
        if s.kind != "random":
            assert s.end <= broken, (s, text[s.start : s.end])
    assert spans("", "python", random.Random(0), 5) == []
    with pytest.raises(ValueError):
        spans("x", "cobol", random.Random(0), 5)


def test_spans_are_deterministic_for_a_seed():
    first = spans(JAVASCRIPT, "javascript", random.Random(7), 12)
    assert first == spans(JAVASCRIPT, "javascript", random.Random(7), 12)
    assert first != spans(JAVASCRIPT, "javascript", random.Random(8), 12)


def _package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


UTIL = textwrap.dedent('''\
    def scale_vector(vector, factor):
        """Each component times factor."""
        return [component * factor for component in vector]


    def norm(vector):
        return sum(c * c for c in vector) ** 0.5
''')
MAIN = textwrap.dedent('''\
    from .util import norm, scale_vector


    def unit(vector):
        length = norm(vector)
        if length == 0:
            raise ValueError("zero vector")
        return scale_vector(vector, 1 / length)


    def doubled(vector):
        result = scale_vector(vector, 2)
        return result
''')
HUMANEVAL = textwrap.dedent('''\
    from typing import List


    def has_close_elements(numbers: List[float],  threshold: float) -> bool:
        for i, a in enumerate(numbers):
            for j, b in enumerate(numbers):
                if i != j and abs(a - b) < threshold:
                    return True
        return False
''')


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_build_gives_context_from_the_imported_file(tmp_path):
    root = _package(tmp_path / "vectors", {"util.py": UTIL, "main.py": MAIN, "__init__.py": ""})
    out = tmp_path / "fim.jsonl"
    summary = build(out, root=root, per_file=6, seed=0)
    rows = _read(out)
    assert summary["examples"] == len(rows) > 0
    assert summary["files"] == 2 and summary["by_language"] == {"python": len(rows)}
    texts = {"main.py": MAIN, "util.py": UTIL}
    for row in rows:
        assert row["prefix"] + row["middle"] + row["suffix"] == texts[row["path"]]
        assert row["source"] == f"vectors/{row['path']}" and row["package"] == "vectors"
    main_rows = [row for row in rows if row["path"] == "main.py"]
    assert main_rows
    for row in main_rows:  # the file itself is never its own context
        assert all(c["path"] != "main.py" for c in row["context"])
    util_context = [c for row in main_rows for c in row["context"] if c["path"] == "util.py"]
    assert any("def scale_vector(vector, factor):" in c["text"] for c in util_context)
    assert all(c["text"].startswith(f"# {c['source']}\n") for c in util_context)  # as the prompt renders it
    assert all(sum(len(c["text"]) for c in row["context"]) <= 1500 for row in rows)

    again = tmp_path / "again.jsonl"
    build(again, root=root, per_file=6, seed=0)
    assert again.read_text() == out.read_text()
    build(again, root=root, per_file=6, seed=1)
    assert again.read_text() != out.read_text()

    build(again, root=root, per_file=6, seed=0, context=False)
    assert all(row["context"] == [] for row in _read(again))


def test_a_file_with_a_humaneval_problem_is_dropped(tmp_path):
    root = _package(tmp_path / "pkg", {"util.py": UTIL, "close.py": HUMANEVAL})
    out = tmp_path / "fim.jsonl"
    summary = build(out, root=root, per_file=4)
    assert summary["dropped_humaneval"] == 1
    assert {row["path"] for row in _read(out)} == {"util.py"}


def test_site_packages_tests_and_excluded_packages_are_never_listed(tmp_path):
    root = _package(tmp_path / "proj", {
        "app/core.py": UTIL,
        "venv/lib/python3.11/site-packages/thing/mod.py": UTIL,
        "lib/dist-packages/other.py": UTIL,
        "app/tests/test_core.py": UTIL,
        "app/test_more.py": UTIL,
        "web/index.js": JAVASCRIPT,
        "web/index.d.ts": "export declare const x: number;\n",
        "web/index.min.js": JAVASCRIPT,
        "web/index.cjs.js": JAVASCRIPT,
        "web/app-umd.js": JAVASCRIPT,
        "web/undici/fetch.js": JAVASCRIPT,
    })
    listed = {f.rel for f in source_files(root=root)}
    assert listed == {"app/core.py", "web/index.js"}
    assert not source_files(root=root / "venv" / "lib" / "python3.11" / "site-packages")
    default = source_files()
    assert default and not [f for f in default if "site-packages" in f.path.parts or "dist-packages" in f.path.parts]
    assert not {"idlelib", "asyncio", "undici"} & {f.package for f in default}


def test_one_copy_of_an_npm_module_built_several_ways(tmp_path):
    package = tmp_path / "node_modules" / "widget"
    modules = {f"src/m{i}.ts": TYPESCRIPT for i in range(10)}
    _package(package, {
        "package.json": '{"name": "widget"}',
        "src/shape.ts": TYPESCRIPT,
        "dist/esm/shape.js": JAVASCRIPT,
        "dist/cjs/shape.cjs": JAVASCRIPT,
        "dist/cjs/other.cjs": JAVASCRIPT,
        "dist/widget.js": JAVASCRIPT,  # the bundle of them all
        **modules,
    })
    from hindsight.fim.data import SourceFile, _one_build_each

    files = [SourceFile("widget", package, p, "javascript", "npm") for p in sorted(package.rglob("*.*js"))]
    files += [SourceFile("widget", package, p, "typescript", "npm") for p in sorted(package.rglob("*.ts"))]
    assert [f.rel for f in _one_build_each(files)] == ["dist/cjs/other.cjs", *sorted(modules), "src/shape.ts"]


def hindsight(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hindsight", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_cli_builds_from_a_directory(tmp_path):
    root = _package(tmp_path / "vectors", {"util.py": UTIL, "main.py": MAIN, "web/app.ts": TYPESCRIPT})
    done = hindsight("build-fim-data", "--root", str(root), "--per-file", "3", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    rows = _read(tmp_path / "fim-data.jsonl")  # the default --out, in the current directory
    assert summary["examples"] == len(rows) == 9
    assert summary["files_by_language"] == {"python": 2, "typescript": 1}

    done = hindsight("build-fim-data", "--root", str(root), "--languages", "typescript", "--out", "ts.jsonl",
                     "--per-file", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "examples" in done.stdout
    assert {row["language"] for row in _read(tmp_path / "ts.jsonl")} == {"typescript"}

    for bad in (["--root", str(tmp_path / "missing")], ["--root", str(root), "--languages", "cobol"]):
        done = hindsight("build-fim-data", *bad, cwd=tmp_path)
        assert done.returncode == 2
        assert done.stderr.startswith("hindsight: ") and done.stderr.count("\n") == 1, done.stderr
