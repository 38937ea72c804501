"""The languages we know (`TABLE`: one row each, every other list of languages derives from it), which
language a document is in, and a cached tree-sitter parser for it.

Only the per-language wheels (`tree_sitter_python`, ...) are used: they ship the compiled grammar, so
nothing is downloaded at run time. A language whose wheel is missing or fails to load gives no parser
(None); callers fall back to rules that need no syntax tree.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

import tree_sitter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Language:
    """One language the product knows: everything about it that is a fact of the language, in one row."""

    name: str  # our name for it, as the log, the gate's features and the options spell it
    extensions: tuple[str, ...]  # file extensions (lower case) that mean it
    lsp_ids: tuple[str, ...]  # LSP languageIds that mean it; the first is the one an editor sends for it
    grammar: tuple[str, str]  # its tree-sitter wheel: (module, function returning the grammar pointer)
    comment: str  # how a line comment starts (the prompt's header and context blocks are comments)
    braces: bool = True  # its blocks are in braces (hindsight/engine/stops.py), not indentation


# The order is that of the gate's one-hot language features (hindsight/gating/features.py): a new
# language goes at the end. typescriptreact is TSX; javascriptreact parses with the JS grammar (which
# accepts JSX).
TABLE = (
    Language("python", (".py", ".pyi"), ("python",), ("tree_sitter_python", "language"), "#", braces=False),
    Language("javascript", (".js", ".mjs", ".cjs", ".jsx"), ("javascript", "javascriptreact"), ("tree_sitter_javascript", "language"), "//"),
    Language("typescript", (".ts", ".mts", ".cts"), ("typescript",), ("tree_sitter_typescript", "language_typescript"), "//"),
    Language("tsx", (".tsx",), ("typescriptreact",), ("tree_sitter_typescript", "language_tsx"), "//"),
    Language("go", (".go",), ("go",), ("tree_sitter_go", "language"), "//"),
    Language("rust", (".rs",), ("rust",), ("tree_sitter_rust", "language"), "//"),
    Language("java", (".java",), ("java",), ("tree_sitter_java", "language"), "//"),
    Language("c", (".c", ".h"), ("c",), ("tree_sitter_c", "language"), "//"),
    Language("cpp", (".cc", ".cpp", ".cxx", ".hpp", ".hh", ".hxx"), ("cpp",), ("tree_sitter_cpp", "language"), "//"),
)  # fmt: skip

LANGUAGES = tuple(language.name for language in TABLE)
BY_NAME = {language.name: language for language in TABLE}
_EXTENSIONS = {extension: language.name for language in TABLE for extension in language.extensions}
SOURCE_EXTENSIONS = tuple(_EXTENSIONS)
_LANGUAGE_IDS = {lsp_id: language.name for language in TABLE for lsp_id in language.lsp_ids}  # LSP languageId → name

_parsers: dict[str, tree_sitter.Parser | None] = {}
# A tree-sitter parser is not safe to use from two threads at once; each language's parser has a lock.
_locks: dict[str, threading.Lock] = {language: threading.Lock() for language in LANGUAGES}
_init_lock = threading.Lock()
# Parses with a time budget (the workspace index's) have parsers of their own: they never hold the lock
# a completion's parse waits for.
_budget_parsers: dict[str, tree_sitter.Parser | None] = {}
_budget_locks: dict[str, threading.Lock] = {language: threading.Lock() for language in LANGUAGES}
_budget_buffers: dict[str, memoryview] = {}  # the source of a budgeted parse is copied here (see _parse_within)


class ParseTimeout(Exception):
    """A parse ran past its time budget and was stopped."""


def language_for(path_or_uri: str) -> str | None:
    """The language of a file path or `file://` URI, by its extension; None when unknown."""
    path = path_or_uri
    if "://" in path_or_uri:
        path = unquote(urlparse(path_or_uri).path)
    ext = os.path.splitext(path)[1].lower()
    return _EXTENSIONS.get(ext)


def normalize_language(language_id: str | None, path_or_uri: str) -> str | None:
    """The language from an LSP languageId when it is one we know, else from the path's extension."""
    if language_id:
        known = _LANGUAGE_IDS.get(language_id.strip().lower())
        if known is not None:
            return known
    return language_for(path_or_uri)


def parser_for(language: str | None) -> tree_sitter.Parser | None:
    """A parser for `language` (cached, one per language); None when unknown or the grammar won't load."""
    if not isinstance(language, str) or language not in BY_NAME:
        return None
    if language in _parsers:
        return _parsers[language]
    with _init_lock:
        if language not in _parsers:
            _parsers[language] = _load(language)
        return _parsers[language]


def _load(language: str) -> tree_sitter.Parser | None:
    module_name, func_name = BY_NAME[language].grammar
    try:
        module = importlib.import_module(module_name)
        return tree_sitter.Parser(tree_sitter.Language(getattr(module, func_name)()))
    except Exception as exc:  # a broken or missing wheel must not take the caller down
        log.warning("no tree-sitter parser for %s: %s", language, exc)
        return None


def parse(
    text: str | bytes, language: str | None, *, old_tree: tree_sitter.Tree | None = None, timeout: float | None = None
) -> tree_sitter.Tree | None:
    """The syntax tree of `text` (str, or UTF-8 bytes), or None when there is no parser for `language`.

    `old_tree`, already brought in line with `text` by `Tree.edit`, makes the parse incremental.
    `timeout` (seconds): a parse that runs longer is stopped and raises ParseTimeout (see `_parse_within`).
    """
    if timeout is not None:
        return _parse_within(text, language, old_tree, timeout)
    parser = parser_for(language)
    if parser is None:
        return None
    source = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    try:
        with _locks[language]:
            if old_tree is None:
                return parser.parse(source)
            return parser.parse(source, old_tree)
    except Exception as exc:
        log.warning("tree-sitter parse failed for %s: %s", language, exc)
        return None


def _parse_within(
    text: str | bytes, language: str | None, old_tree: tree_sitter.Tree | None, timeout: float
) -> tree_sitter.Tree | None:
    """A parse stopped after `timeout` seconds (ParseTimeout), on a parser of its own.

    py-tree-sitter 0.26 calls `progress_callback` only when the source comes through a read callback
    (given bytes it warns and ignores it), so the source is read through one. That also lets other
    threads run: a parse of bytes holds the GIL from start to end (measured: 1 s for 420 KB of
    unbalanced brackets, every other thread stopped), a callback parse gives it up at each callback.

    Two faults of py-tree-sitter 0.26.1 shape the callback. It keeps a reference to each object the
    callback returns (every chunk of every file would stay in memory): so it returns views of one
    buffer per language, which lives on anyway; what leaks is a view object or two per parse (about
    300 bytes). And Node.text, which reads through the callback again, crashes on a view: once the
    parse is done the callback returns bytes (leaking those: hindsight.retrieval.parse does not use Node.text).
    A stopped parser would resume the stopped parse on its next call, whatever the text: it is reset.
    """
    if not isinstance(language, str) or language not in BY_NAME:
        return None
    with _budget_locks[language]:
        if language not in _budget_parsers:
            _budget_parsers[language] = _load(language)
        parser = _budget_parsers[language]
        if parser is None:
            return None
        source = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
        size = len(source)
        buffer = _budget_buffers.get(language)
        if buffer is None or len(buffer) < size:  # a new one; the old one stays with the views it leaked
            buffer = _budget_buffers[language] = memoryview(bytearray(max(size, 2 * len(buffer or b""), 1 << 16)))
        buffer[:size] = source
        parsing = True
        start = time.perf_counter()
        deadline = start + timeout
        stopped = False

        def read(offset: int, _point: tree_sitter.Point) -> bytes | memoryview:
            if parsing and size - offset > 64:
                return buffer[offset:size]
            return source[offset : offset + 1024]  # a short tail, or Node.text after the parse

        def past_deadline(_offset: int, _has_error: bool) -> bool:  # True stops the parse; never raises
            nonlocal stopped
            stopped = time.perf_counter() > deadline
            return stopped

        try:
            if old_tree is None:  # (None is not accepted for old_tree)
                return parser.parse(read, progress_callback=past_deadline)
            return parser.parse(read, old_tree, progress_callback=past_deadline)
        except Exception as exc:
            parser.reset()
            if stopped:
                elapsed = time.perf_counter() - start
                raise ParseTimeout(f"parse stopped after {elapsed * 1000:.0f} ms ({size} bytes)") from None
            log.warning("tree-sitter parse failed for %s: %s", language, exc)
            return None
        finally:
            parsing = False


def changed_span(old: bytes, new: bytes) -> tuple[int, int, int]:
    """(start, old_end, new_end): the one span that differs between `old` and `new`.

    Where the span could slide (a line inserted after a line: "a\\nX\\n" or "\\nXa" both fit), it is
    placed leftmost, at the end of the line before, not at the start of the next statement: measured on
    six files of 900-3,000 lines, lines typed in: re-parse p95 1.9 ms, against 4.0 ms placed rightmost
    (tree-sitter then re-lexes the statement the span touches, and for Python its whole block). So the
    common suffix is taken first, then the common prefix of what is left; each by bisection on slice
    equality (C speed on long texts).
    """
    limit = min(len(old), len(new))
    lo, hi = 0, limit  # longest common suffix
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if old[len(old) - mid :] == new[len(new) - mid :]:
            lo = mid
        else:
            hi = mid - 1
    suffix = lo
    lo, hi = 0, limit - suffix  # longest common prefix not overlapping the suffix
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if old[:mid] == new[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo, len(old) - suffix, len(new) - suffix


def _point(data: bytes, offset: int) -> tuple[int, int]:
    """tree-sitter's (row, byte column) of a byte offset."""
    return data.count(b"\n", 0, offset), offset - (data.rfind(b"\n", 0, offset) + 1)


def reparse(
    old_data: bytes, old_tree: tree_sitter.Tree, data: bytes, language: str, *, timeout: float | None = None
) -> tree_sitter.Tree | None:
    """`data`'s tree, parsed incrementally from `old_tree` (the tree of `old_data`, edited in place):
    tree-sitter re-parses only what the one changed span touched. `timeout`: as for `parse`."""
    start, old_end, new_end = changed_span(old_data, data)
    old_tree.edit(
        start_byte=start,
        old_end_byte=old_end,
        new_end_byte=new_end,
        start_point=_point(old_data, start),
        old_end_point=_point(old_data, old_end),
        new_end_point=_point(data, new_end),
    )
    return parse(data, language, old_tree=old_tree, timeout=timeout)
