"""When a completion should stop: the single/multi-line decision, and the streaming stop rule.

`completion_mode` decides, before generating, whether a completion may span lines. It is 'multi' only
where a block has just been opened and has no statements yet: the cursor sits after a Python
compound-statement ':' or a brace language's block '{', with nothing but whitespace (and comments on
earlier lines) between, and nothing after it on the cursor line. Everything else is 'single'.

Tree-sitter decides what the ':' or '{' belongs to. Two things keep that cheap and robust:

* Most requests never parse: unless the last thing before the cursor is the opener (or a line with a
  comment, which might hide one), the answer is 'single' from the text alone.
* In the brace languages a '}' is put in at the cursor before parsing. Without it an unclosed '{' makes
  tree-sitter recover badly (`if (x) {` parses as an if with an object-literal body, the rest of the file
  is swallowed into the block, or the '{' lands in an ERROR node); with it the opener parses as the block
  or literal it is. Whether the block already has statements is then read from the lines below the
  cursor, by indentation. Python needs no such help: tree-sitter-python parses `def f():` with an empty
  body as a function with an empty `block`; the rare ':' that lands in an ERROR node is checked against
  the header line's text.

The last tree is kept per language and the next parse reuses it (`Tree.edit` + incremental parse), so
repeated requests on a large file cost a fraction of a full parse.

`StopRule` is fed the growing completion and says when to stop and what to keep.
"""

from __future__ import annotations

import logging
import re
import threading

from hindsight import syntax

log = logging.getLogger(__name__)

SINGLE = "single"
MULTI = "multi"

BRACE_LANGUAGES = frozenset(language.name for language in syntax.TABLE if language.braces)

# Python: the node types whose ':' opens a block (the ':' is followed by the `block` child).
_PYTHON_COMPOUND = frozenset(
    {
        "function_definition",
        "class_definition",
        "if_statement",
        "elif_clause",
        "else_clause",
        "for_statement",
        "while_statement",
        "with_statement",
        "try_statement",
        "except_clause",
        "except_group_clause",
        "finally_clause",
        "match_statement",
        "case_clause",
    }
)
_PYTHON_HEADER = re.compile(
    r"^\s*(?:async\s+)?(?:def|class|if|elif|else|for|while|with|try|except|finally|match|case)\b"
)

# Brace languages: the type of the node whose first child is the '{' when that '{' opens a block of
# statements or declarations (function, method, class, struct, impl, interface, enum, switch, plain
# block). Object literals, initializer lists, composite literals and struct expressions are absent.
_JS_BLOCKS = frozenset({"statement_block", "class_body", "switch_body"})
_TS_BLOCKS = _JS_BLOCKS | {"interface_body", "enum_body"}
_BRACE_BLOCKS = {
    "javascript": _JS_BLOCKS,
    "typescript": _TS_BLOCKS,
    "tsx": _TS_BLOCKS,
    "go": frozenset(
        {
            "block",
            "field_declaration_list",
            "interface_type",
            "expression_switch_statement",
            "type_switch_statement",
            "select_statement",
        }
    ),
    "rust": frozenset(
        {"block", "declaration_list", "field_declaration_list", "enum_variant_list", "match_block"}
    ),
    "java": frozenset(
        {
            "block",
            "class_body",
            "constructor_body",
            "interface_body",
            "enum_body",
            "switch_block",
            "annotation_type_body",
        }
    ),
    "c": frozenset({"compound_statement", "field_declaration_list", "enumerator_list"}),
    "cpp": frozenset(
        {"compound_statement", "field_declaration_list", "enumerator_list", "declaration_list"}
    ),
}
# Where the '{' is a direct child of the statement that owns the block (Go's switch and select).
_SELF_OWNED = frozenset({"expression_switch_statement", "type_switch_statement", "select_statement"})

_CLOSER_LINE = re.compile(r"^[}\])][}\]);,]*$")

_lock = threading.Lock()
_last_parse: dict[str, tuple[bytes, object]] = {}  # language -> (source, tree), reused incrementally


# --------------------------------------------------------------------------------------------------
# single or multi


def completion_mode(text: str, line: int, character: int, language: str | None) -> str:
    """'multi' where the cursor opens an empty block (see the module docstring), else 'single'.

    `line` and `character` are 0-based; `character` counts Python str characters within the line.
    """
    if not isinstance(language, str) or (language != "python" and language not in BRACE_LANGUAGES):
        return SINGLE
    try:
        return MULTI if _opens_empty_block(text, line, character, language) else SINGLE
    except Exception:  # a surprise in a parse must never fail a completion request
        log.exception("completion_mode failed; answering single")
        return SINGLE


def _opens_empty_block(text: str, line: int, character: int, language: str) -> bool:
    python = language == "python"
    opener = ":" if python else "{"
    comment_marks = ("#",) if python else ("//", "*/")

    line_start = _line_start(text, line)
    if line_start is None:
        return False
    line_end = text.find("\n", line_start)
    if line_end < 0:
        line_end = len(text)
    cursor = line_start + max(0, min(character, line_end - line_start))
    if text[cursor:line_end].strip():
        return False  # content after the cursor on its line
    before = text[:cursor].rstrip()
    if not before:
        return False
    if before[-1] != opener:
        # Only a comment on an earlier line can still hide an opener before the cursor.
        anchor_start = before.rfind("\n") + 1
        if anchor_start >= line_start or not any(m in before[anchor_start:] for m in comment_marks):
            return False

    source = text if python else text[:cursor] + "}" + text[cursor:]
    data = source.encode("utf-8", "surrogatepass")
    with _lock:
        tree = _parse_reusing(data, language)
        if tree is None:
            return False
        end = len(before.encode("utf-8", "surrogatepass"))
        header_indent = _opener_header_indent(tree, data, end, line, language)
    if header_indent is None:
        return False
    return _body_is_empty(text, line_end, header_indent, python)


def _opener_header_indent(tree, data: bytes, end: int, cursor_row: int, language: str) -> int | None:
    """Indentation of the header whose block the last token before byte `end` opens; None if it is
    not such an opener. Comments between the opener and the cursor are stepped over."""
    root = tree.root_node
    for _ in range(200):
        node = root.descendant_for_byte_range(end - 1, end)
        if node is None:
            return None
        if "comment" not in node.type:
            break
        if node.start_point.row == cursor_row:
            return None  # the cursor ends a comment
        end = len(data[: node.start_byte].rstrip())
        if end == 0:
            return None
    else:
        return None

    if language == "python":
        return _python_header_indent(node, data)
    return _brace_header_indent(node, data, language)


def _python_header_indent(node, data: bytes) -> int | None:
    if node.type != ":" or node.parent is None:
        return None
    parent = node.parent
    following = _child_after(parent, node)
    if parent.type in _PYTHON_COMPOUND and following is not None and following.type == "block":
        return _indent_width(_line_at(data, parent.start_byte))
    if parent.type == "ERROR" or parent.has_error:
        # Recovery put the ':' in an ERROR node (e.g. after an unclosed bracket further up): accept it
        # when its own line is a compound-statement header whose brackets balance.
        header = _line_at(data, node.start_byte)[: node.start_point.column]
        if _PYTHON_HEADER.match(header) and _brackets_balance(header):
            return _indent_width(header)
    return None


def _brace_header_indent(node, data: bytes, language: str) -> int | None:
    if node.type != "{" or node.parent is None:
        return None
    container = node.parent
    if container.type not in _BRACE_BLOCKS[language]:
        return None
    owner = container if container.type in _SELF_OWNED else container.parent
    if (
        language in ("c", "cpp")
        and owner is not None
        and owner.type == "function_definition"
        and not _has_function_declarator(owner)
    ):
        return None  # C++ `T v{` misread as a function definition: a brace initializer
    indent = _indent_width(_line_at(data, node.start_byte))
    if owner is not None and owner.type != "ERROR" and owner.start_byte < node.start_byte:
        # A header spread over lines (`if (a &&\n    b) {`): the statement's first line counts.
        indent = min(indent, _indent_width(_line_at(data, owner.start_byte)))
    return indent


def _child_after(parent, node):
    # Not `node.next_sibling`: it skips the zero-width `block` tree-sitter-python gives an empty body.
    seen = False
    for child in parent.children:
        if seen and "comment" not in child.type:
            return child
        seen = seen or child == node
    return None


def _has_function_declarator(definition) -> bool:
    declarator = definition.child_by_field_name("declarator")
    for _ in range(16):
        if declarator is None:
            return False
        if declarator.type == "function_declarator":
            return True
        declarator = declarator.child_by_field_name("declarator")
    return False


def _body_is_empty(text: str, line_end: int, header_indent: int, python: bool) -> bool:
    """Whether no statement follows the cursor line inside the block: the first line below that is not
    blank, a comment or a closer is indented no deeper than the header."""
    comment_starts = ("#",) if python else ("//", "/*", "* ", "*/")
    pos = line_end
    for _ in range(500):
        if pos >= len(text):
            return True
        nxt = text.find("\n", pos + 1)
        if nxt < 0:
            nxt = len(text)
        row = text[pos + 1 : nxt]
        pos = nxt
        stripped = row.strip()
        if not stripped or stripped == "*" or stripped.startswith(comment_starts):
            continue
        if stripped[0] in "}])":
            return True
        return _indent_width(row) <= header_indent
    return True


def _parse_reusing(data: bytes, language: str):
    """Parse `data`, reusing the language's previous tree when there is one. Call with `_lock` held."""
    previous = _last_parse.get(language)
    if previous is None:
        tree = syntax.parse(data, language)
    elif previous[0] == data:
        return previous[1]
    else:
        tree = syntax.reparse(previous[0], previous[1], data, language)
    if tree is None:
        _last_parse.pop(language, None)
    else:
        _last_parse[language] = (data, tree)
    return tree


def _line_start(text: str, line: int) -> int | None:
    if line < 0:
        return None
    pos = 0
    for _ in range(line):
        pos = text.find("\n", pos) + 1
        if pos == 0:
            return None
    return pos


def _line_at(data: bytes, offset: int) -> str:
    start = data.rfind(b"\n", 0, offset) + 1
    end = data.find(b"\n", offset)
    return data[start : end if end >= 0 else len(data)].decode("utf-8", "replace")


def _indent_width(line: str) -> int:
    return len(line[: len(line) - len(line.lstrip())].expandtabs(8))


def _brackets_balance(text: str) -> bool:
    depth = 0
    quote = None
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0 and quote is None


# --------------------------------------------------------------------------------------------------
# the stop rule


class StopRule:
    """Decides, as the completion grows, when to stop generating and what to keep.

    single: stop at the first newline; keep what precedes it.
    multi: the body's indentation is that of the completion's first non-blank line (the first completion
    line continues the cursor line, so the cursor line's leading whitespace counts too). Stop before
    the first later line indented less than the body, after `max_lines` lines, or at two blank lines in
    a row. A dedented line that is only a closer ('}', '};', '})' ...) ends the block: it is kept unless
    the suffix's first non-blank line already has it. What is kept has no trailing blank lines or
    whitespace.
    """

    def __init__(self, mode: str, *, cursor_line_prefix: str, suffix: str, max_lines: int = 12):
        if mode not in (SINGLE, MULTI):
            raise ValueError(f"mode must be {SINGLE!r} or {MULTI!r}, not {mode!r}")
        self.mode = mode
        self.max_lines = max(1, max_lines)
        prefix = cursor_line_prefix
        self._prefix_indent = prefix[: len(prefix) - len(prefix.lstrip())]
        self._prefix_blank = not cursor_line_prefix.strip()
        self._suffix_head = _first_nonblank_line(suffix)

    def feed(self, text: str) -> str | None:
        """`text` is the whole completion so far. None: keep generating; a string: stop, keep that."""
        return self._scan(text, final=False)

    def finish(self, text: str) -> str:
        """The text to keep when generation ended by itself (end of stream, token limit)."""
        result = self._scan(text, final=True)
        return result if result is not None else text.rstrip()

    def _scan(self, text: str, *, final: bool) -> str | None:
        if self.mode == SINGLE:
            newline = text.find("\n")
            if newline >= 0:
                return text[:newline]
            return text if final else None

        lines = text.split("\n")
        kept: list[str] = []
        body_indent = None
        blank_run = 0
        for i, row in enumerate(lines):
            complete = final or i < len(lines) - 1
            stripped = row.strip()
            if not stripped:
                if not complete:
                    return None
                kept.append(row)
                if i > 0 or self._prefix_blank:  # an empty rest of a header line is no blank line
                    blank_run += 1
                    if blank_run >= 2:
                        return _joined(kept)
            else:
                blank_run = 0
                indent = _indent_width((self._prefix_indent if i == 0 else "") + row)
                if body_indent is None and stripped[0] not in "}])":
                    body_indent = indent
                elif body_indent is None or indent < body_indent:
                    # A dedented line ends the block; so does a closer before any body (an empty block).
                    if stripped[0] not in "}])":
                        return _joined(kept)  # the block ended: a dedented statement
                    if not complete:
                        return None  # a closer-only line? wait for the rest of it
                    if is_closer_line(stripped) and not self._suffix_has_closer(stripped):
                        kept.append(row)
                    return _joined(kept)
                if not complete:
                    return None
                kept.append(row)
            if len(kept) >= self.max_lines:
                return _joined(kept)
        return _joined(kept) if final else None

    def _suffix_has_closer(self, closer: str) -> bool:
        return suffix_has_closer(closer, self._suffix_head)


def is_closer_line(line: str) -> bool:
    """Whether `line` is only closing brackets, maybe with `;`/`,`: `}`, `};`, `})`, `});` ..."""
    return bool(_CLOSER_LINE.match(line.strip()))


def suffix_has_closer(closer: str, head: str) -> bool:
    """Whether `head`, the suffix's first non-blank line (stripped), already has the closer line
    `closer` (stripped): it starts with it, or it is the start of it (`}` against `};`: the brace is
    there, and a second one would unbalance the file)."""
    return bool(head) and (head.startswith(closer) or (closer.startswith(head) and head[0] == closer[0]))


def _first_nonblank_line(text: str) -> str:
    for row in text.split("\n"):
        if row.strip():
            return row.strip()
    return ""


def _joined(rows: list[str]) -> str:
    return "\n".join(rows).rstrip()
