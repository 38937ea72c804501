"""Per-file syntax facts for cross-file context retrieval: syntax-aligned chunks (for BM25), definitions
with their signatures and docs (for the import graph), and imports (CrossCodeEval / SynthCoder style).

One walk over the statement-level nodes of a tree-sitter tree does it; what differs between languages
is mostly in the `_Rules` tables below. Function bodies are never entered: nothing in them is a
definition another file can name.
"""

from __future__ import annotations

import keyword
import re
import textwrap
from dataclasses import dataclass, field
from typing import Callable

import tree_sitter
from tree_sitter import Node

from hindsight.syntax import language_for, parse


@dataclass(frozen=True)
class Chunk:
    path: str
    start_line: int  # 0-based
    end_line: int  # exclusive
    text: str
    kind: str  # 'function' | 'method' | 'class' | 'window'
    name: str | None  # the definition's qualname for function/method/class chunks


@dataclass(frozen=True)
class Definition:
    name: str
    qualname: str  # 'Rect.area' for a member (container.name), else name
    kind: str  # 'function' | 'method' | 'class' | 'variable' | 'type'
    path: str
    start_line: int  # decorators, attributes, `export`, `template <...>` included; doc comments not
    end_line: int
    signature: str  # the header up to the body; a body-less declaration's whole text
    doc: str  # docstring or the comment block right above, as written (dedented); '' if none
    body: str  # the definition's whole lines
    bases: tuple[str, ...]


@dataclass(frozen=True)
class Import:
    module: str
    names: tuple[tuple[str, str], ...]  # (imported name, local name)
    alias: str | None  # the local name bound to the module itself
    line: int


@dataclass(frozen=True)
class FileInfo:
    path: str
    language: str
    chunks: tuple[Chunk, ...]
    definitions: tuple[Definition, ...]
    imports: tuple[Import, ...]


# -- imports, one reader per language family ----------------------------------------------------------
Text = Callable[[Node], str]


def _compact(text: str) -> str:
    return "".join(text.split())


def _python_imports(node: Node, text: Text) -> list[Import]:
    line = node.start_point.row
    if node.type == "import_statement":  # import a.b, c as d
        found = []
        for item in node.children_by_field_name("name"):
            if item.type == "aliased_import":
                found.append(Import(_compact(text(item.child_by_field_name("name"))), (), text(item.child_by_field_name("alias")), line))
            else:
                module = _compact(text(item))
                found.append(Import(module, (), module.split(".")[0], line))
        return found
    names = []
    for item in node.named_children:
        if item.type == "wildcard_import":
            names.append(("*", "*"))
        elif item.type == "aliased_import":
            names.append((_compact(text(item.child_by_field_name("name"))), text(item.child_by_field_name("alias"))))
        elif item.type == "dotted_name" and item != node.child_by_field_name("module_name"):
            names.append((_compact(text(item)), _compact(text(item))))
    module = node.child_by_field_name("module_name")
    return [Import(_compact(text(module)) if module is not None else "__future__", tuple(names), None, line)]


def _unquote(node: Node, text: Text) -> str:
    return text(node)[1:-1]


def _require(value: Node | None, text: Text) -> tuple[str, str | None] | None:
    """(module, member) of `require('m')` or `require('m').member`; None for any other value."""
    member = None
    if value is not None and value.type == "member_expression":
        member, value = text(value.child_by_field_name("property")), value.child_by_field_name("object")
    if value is None or value.type != "call_expression":
        return None
    function, arguments = value.child_by_field_name("function"), value.child_by_field_name("arguments")
    if function is None or text(function) != "require" or arguments is None or arguments.named_child_count != 1:
        return None
    argument = arguments.named_children[0]
    return (_unquote(argument, text), member) if argument.type == "string" else None


def _js_imports(node: Node, text: Text) -> list[Import]:
    line = node.start_point.row
    if node.type in ("lexical_declaration", "variable_declaration"):  # const x = require('x'), {a, b: c} = require('y')
        found = []
        for declarator in node.named_children:
            target, value = declarator.child_by_field_name("name"), declarator.child_by_field_name("value")
            required = _require(value, text)
            if required is None or target is None:
                continue
            module, member = required
            if target.type == "identifier" and member is not None:
                found.append(Import(module, ((member, text(target)),), None, line))
            elif target.type == "identifier":
                found.append(Import(module, (), text(target), line))
            elif target.type == "object_pattern":
                names = []
                for item in target.named_children:
                    if item.type == "shorthand_property_identifier_pattern":
                        names.append((text(item), text(item)))
                    elif item.type == "pair_pattern":
                        names.append((text(item.child_by_field_name("key")), text(item.child_by_field_name("value"))))
                found.append(Import(module, tuple(names), None, line))
        return found
    source = node.child_by_field_name("source")
    clause = next((c for c in node.named_children if c.type == "import_require_clause"), None)
    if clause is not None:  # TS: import x = require('x')
        return [Import(_unquote(clause.child_by_field_name("source"), text), (), text(clause.named_children[0]), line)]
    if source is None:  # an export without `from`
        return []
    names: list[tuple[str, str]] = []
    alias = None
    for item in node.named_children:
        for part in item.named_children if item.type == "import_clause" else [item]:
            if part.type == "identifier":  # the default import
                names.append(("default", text(part)))
            elif part.type in ("namespace_import", "namespace_export"):
                # `* as name`; in `export * as default from` the name is a keyword, not a named child
                alias = text((part.named_children or part.children)[-1])
            elif part.type in ("named_imports", "export_clause"):
                for spec in part.named_children:
                    name, local = spec.child_by_field_name("name"), spec.child_by_field_name("alias")
                    if name is not None:
                        names.append((text(name), text(local or name)))
    if node.type == "export_statement" and not names and alias is None:  # export * from './x'
        names.append(("*", "*"))
    return [Import(_unquote(source, text), tuple(names), alias, line)]


def _go_imports(node: Node, text: Text) -> list[Import]:
    specs = [s for c in node.named_children for s in (c.named_children if c.type == "import_spec_list" else [c])]
    found = []
    for spec in specs:
        path, name = spec.child_by_field_name("path"), spec.child_by_field_name("name")
        if path is None:
            continue
        module = _unquote(path, text)
        found.append(Import(module, (), text(name) if name is not None else module.rsplit("/", 1)[-1], spec.start_point.row))
    return found


def _rust_uses(node: Node, prefix: list[str], text: Text) -> list[tuple[str, str, str]]:
    """(module, name, local) for each name a `use` tree brings in; '' as name for a bare `use m;`."""
    kind = node.type
    if kind == "use_list":
        return [u for item in node.named_children for u in _rust_uses(item, prefix, text)]
    if kind == "scoped_use_list":
        path = node.child_by_field_name("path")
        inner = prefix + (_compact(text(path)).split("::") if path is not None else [])
        return _rust_uses(node.child_by_field_name("list"), inner, text)
    if kind == "use_wildcard":
        path = node.named_children[0] if node.named_child_count else None
        return [("::".join(prefix + (_compact(text(path)).split("::") if path else [])), "*", "*")]
    local = None
    if kind == "use_as_clause":
        local = text(node.child_by_field_name("alias"))
        node = node.child_by_field_name("path")
    parts = prefix + _compact(text(node)).split("::")
    if parts[-1] == "self":  # use a::b::{self} brings in b
        parts = parts[:-1]
    if len(parts) == 1:
        return [(parts[0], "", "")] if local is None else [(parts[0], parts[0], local)]
    return [("::".join(parts[:-1]), parts[-1], local or parts[-1])]


def _rust_imports(node: Node, text: Text) -> list[Import]:
    argument = node.child_by_field_name("argument")
    if argument is None:
        return []
    grouped: dict[str, list[tuple[str, str]]] = {}
    for module, name, local in _rust_uses(argument, [], text):
        grouped.setdefault(module, [])
        if name:
            grouped[module].append((name, local))
    return [Import(module, tuple(names), None, node.start_point.row) for module, names in grouped.items()]


def _java_imports(node: Node, text: Text) -> list[Import]:
    path = next((c for c in node.named_children if c.type in ("scoped_identifier", "identifier")), None)
    if path is None:
        return []
    module = _compact(text(path))
    if any(c.type == "asterisk" for c in node.named_children):
        return [Import(module + ".*", (("*", "*"),), None, node.start_point.row)]
    last = module.rsplit(".", 1)[-1]
    return [Import(module, ((last, last),), None, node.start_point.row)]


def _c_imports(node: Node, text: Text) -> list[Import]:
    path = node.child_by_field_name("path")
    return [Import(text(path).strip(), (), None, node.start_point.row)] if path is not None else []


# -- per-language tables ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Rules:
    definitions: dict[str, str]  # node type → kind; 'function' becomes 'method' inside a class; 'variable' and
    # 'declaration' (C/C++: prototype or variable) bind names; 'impl' (Rust) holds methods of a type
    read_imports: Callable[[Node, Text], list[Import]]
    imports: frozenset[str]
    wrappers: frozenset[str] = frozenset()  # around definitions; one definition inside takes the wrapper's lines
    scopes: frozenset[str] = frozenset()  # whose children count as being at the wrapper's level
    attributes: frozenset[str] = frozenset()  # sibling nodes above a definition that belong to it
    comments: frozenset[str] = frozenset({"comment"})


_JS_DEFINITIONS = {
    "function_declaration": "function",
    "generator_function_declaration": "function",
    "class_declaration": "class",
    "method_definition": "function",
    "lexical_declaration": "variable",
    "variable_declaration": "variable",
}
_TS_DEFINITIONS = _JS_DEFINITIONS | {
    "abstract_class_declaration": "class",
    "interface_declaration": "type",
    "type_alias_declaration": "type",
    "enum_declaration": "type",
    "function_signature": "function",
    "abstract_method_signature": "function",
}
_JS_RULES = dict(
    read_imports=_js_imports,
    imports=frozenset({"import_statement", "export_statement", "lexical_declaration", "variable_declaration"}),
    wrappers=frozenset({"export_statement"}),
    scopes=frozenset({"expression_statement", "internal_module", "module", "ambient_declaration", "statement_block"}),
    attributes=frozenset({"decorator"}),
)
_C_DEFINITIONS = {
    "function_definition": "function",
    "declaration": "declaration",
    "struct_specifier": "type",
    "union_specifier": "type",
    "enum_specifier": "type",
    "type_definition": "type",
}
_C_RULES = dict(
    read_imports=_c_imports,
    imports=frozenset({"preproc_include"}),
    scopes=frozenset(
        {"preproc_ifdef", "preproc_if", "preproc_else", "preproc_elif", "preproc_elifdef", "linkage_specification",
         "declaration_list", "namespace_definition"}
    ),
)

_RULES: dict[str, _Rules] = {
    "python": _Rules(
        definitions={"function_definition": "function", "class_definition": "class", "expression_statement": "variable"},
        read_imports=_python_imports,
        imports=frozenset({"import_statement", "import_from_statement", "future_import_statement"}),
        wrappers=frozenset({"decorated_definition"}),
        # `if TYPE_CHECKING:`, `try: import x except ImportError: ...` and platform-dependent definitions
        scopes=frozenset(
            {"if_statement", "elif_clause", "else_clause", "try_statement", "except_clause", "finally_clause",
             "with_statement", "block"}
        ),
    ),
    "javascript": _Rules(definitions=_JS_DEFINITIONS, **_JS_RULES),
    "typescript": _Rules(definitions=_TS_DEFINITIONS, **_JS_RULES),
    "tsx": _Rules(definitions=_TS_DEFINITIONS, **_JS_RULES),
    "go": _Rules(
        definitions={
            "function_declaration": "function",
            "method_declaration": "function",
            "type_spec": "type",
            "type_alias": "type",
            "const_spec": "variable",
            "var_spec": "variable",
        },
        read_imports=_go_imports,
        imports=frozenset({"import_declaration"}),
        wrappers=frozenset({"type_declaration", "const_declaration", "var_declaration"}),
    ),
    "rust": _Rules(
        definitions={
            "function_item": "function",
            "function_signature_item": "function",
            "struct_item": "type",
            "enum_item": "type",
            "union_item": "type",
            "trait_item": "type",
            "type_item": "type",
            "const_item": "variable",
            "static_item": "variable",
            "impl_item": "impl",
        },
        read_imports=_rust_imports,
        imports=frozenset({"use_declaration"}),
        scopes=frozenset({"mod_item", "declaration_list"}),
        attributes=frozenset({"attribute_item"}),
        comments=frozenset({"line_comment", "block_comment"}),
    ),
    "java": _Rules(
        definitions={
            "class_declaration": "class",
            "record_declaration": "class",
            "interface_declaration": "type",
            "enum_declaration": "type",
            "annotation_type_declaration": "type",
            "method_declaration": "function",
            "constructor_declaration": "function",
        },
        read_imports=_java_imports,
        imports=frozenset({"import_declaration"}),
        scopes=frozenset({"enum_body_declarations"}),
        comments=frozenset({"line_comment", "block_comment"}),
    ),
    "c": _Rules(definitions=_C_DEFINITIONS, **_C_RULES),
    "cpp": _Rules(
        definitions=_C_DEFINITIONS
        | {"class_specifier": "class", "struct_specifier": "class", "field_declaration": "declaration", "alias_declaration": "type"},
        wrappers=frozenset({"template_declaration"}),
        **_C_RULES,
    ),
}

# Wrappers whose keyword is part of the signature (`type T struct`, `template <typename T> T f()`), unlike
# decorators and `export`.
_KEYWORD_WRAPPERS = frozenset({"type_declaration", "const_declaration", "var_declaration", "template_declaration"})
# A JS binding whose value is one of these defines a function or class.
_VALUE_KINDS = {
    "arrow_function": "function",
    "function_expression": "function",
    "function": "function",
    "generator_function": "function",
    "class": "class",
}
_NAME_TYPES = frozenset(
    {"identifier", "type_identifier", "field_identifier", "property_identifier", "private_property_identifier",
     "namespace_identifier", "destructor_name", "operator_name"}
)
# a.b.C, a::b::C: the simple name is the last part
_QUALIFIED = frozenset(
    {"attribute", "member_expression", "scoped_identifier", "scoped_type_identifier", "nested_type_identifier",
     "qualified_identifier", "qualified_type", "nested_identifier"}
)
# Clauses that list base classes, and lists within them.
_BASE_LISTS = frozenset(
    {"argument_list", "class_heritage", "extends_clause", "implements_clause", "extends_type_clause", "superclass",
     "super_interfaces", "extends_interfaces", "type_list", "base_class_clause", "trait_bounds"}
)
_NOT_BASES = frozenset(
    {"keyword_argument", "list_splat", "dictionary_splat", "type_arguments", "template_argument_list",
     "access_specifier", "comment"}
)


def _last_row(node: Node) -> int:
    """The last line holding text of `node` (some nodes end at column 0 of the line after)."""
    row, column = node.end_point
    return row - 1 if column == 0 and row > node.start_point.row else row


def _simple_name(node: Node | None, text: Text) -> str | None:
    """'Shape' for Shape, shapes.Shape, ns::Shape<int>, Generic[T]. (`text`, not Node.text: the index's
    trees come from a read callback, which Node.text would call again, leaking what it returns.)"""
    while node is not None:
        if node.type in _NAME_TYPES:
            return text(node)
        if node.type in _QUALIFIED:
            node = node.named_children[-1] if node.named_child_count else None
            continue
        head = next((c for f in ("name", "type", "value") if (c := node.child_by_field_name(f)) is not None), None)
        node = head or (node.named_children[0] if node.named_child_count else None)
    return None


def _base_names(node: Node, text: Text) -> list[str]:
    if node.type in _NOT_BASES:
        return []
    if node.type in _BASE_LISTS:
        return [name for child in node.named_children for name in _base_names(child, text)]
    name = _simple_name(node, text)
    return [name] if name else []


def _declarators(node: Node) -> list[Node]:
    """C/C++: the chain of declarators down to the declared name (pointer, function, init declarators...)."""
    chain = []
    current = node.child_by_field_name("declarator")
    while current is not None:
        chain.append(current)
        if current.type in _NAME_TYPES or current.type == "qualified_identifier":
            break
        current = current.child_by_field_name("declarator") or (current.named_children[0] if current.named_child_count else None)
    return chain


def _after_annotations(node: Node) -> int:
    """Where a definition's signature starts: Java annotations are left out, as decorators are."""
    modifiers = next((c for c in node.children if c.type == "modifiers"), None)
    annotations = [c for c in modifiers.children if c.type.endswith("annotation")] if modifiers is not None else []
    return annotations[-1].end_byte if annotations else node.start_byte


def _body(node: Node) -> Node | None:
    body = node.child_by_field_name("body")
    if body is None and node.type == "type_spec":  # Go: type T struct {...} / interface {...}
        spec = node.child_by_field_name("type")
        body = next((c for c in spec.children if c.type in ("field_declaration_list", "{")), None) if spec else None
    return body


@dataclass
class _Unit:
    """A definition to chunk: a function, a method, or a class with its members."""

    start: int
    end: int
    kind: str  # 'function' | 'method' | 'class'
    name: str
    members: list[_Unit] = field(default_factory=list)


class _Walker:
    def __init__(self, path: str, language: str, source: bytes, lines: list[str]):
        self.path, self.language, self.source, self.lines = path, language, source, lines
        self.rules = _RULES[language]
        self.definitions: list[Definition] = []
        self.imports: list[Import] = []

    def text(self, node: Node) -> str:
        return self.source[node.start_byte : node.end_byte].decode("utf-8", "replace")

    def visit(self, parent: Node, container: str | None, units: list[_Unit]) -> None:
        for node in parent.named_children:
            self.visit_node(node, node, container, units)

    def visit_node(self, node: Node, outer: Node, container: str | None, units: list[_Unit]) -> None:
        rules, kind = self.rules, node.type
        if kind in rules.imports and container is None:
            self.imports += rules.read_imports(node, self.text)
        if kind in rules.wrappers:
            inner = [c for c in node.named_children if c.type in rules.definitions or c.type in rules.wrappers]
            for child in inner:
                self.visit_node(child, outer if len(inner) == 1 else child, container, units)
        elif kind in rules.scopes or kind == "ERROR":
            # Into an ERROR node too: one syntax error (half-typed code) can wrap the rest of the file
            # in one, and what it holds still parses as definitions.
            self.visit(node, container, units)
        elif kind in rules.definitions:
            self.define(node, outer, rules.definitions[kind], container, units)

    def define(self, node: Node, outer: Node, kind: str, container: str | None, units: list[_Unit]) -> None:
        if kind == "impl":  # Rust: not a definition, but its methods are the type's
            name = _simple_name(node.child_by_field_name("type"), self.text) or "impl"
            lead, _, end, _ = self.extent(outer)
            unit = _Unit(lead, end, "class", name)
            body = node.child_by_field_name("body")
            if body is not None:
                self.visit(body, name, unit.members)
            units.append(unit)
            return
        chain = _declarators(node)
        if kind == "declaration":  # C/C++: a prototype, or a variable
            kind = "function" if any(d.type == "function_declarator" for d in chain) else "variable"
        if kind == "variable":
            if container is None:
                for name, value in self.bindings(node, chain):
                    value_kind = _VALUE_KINDS.get(value.type, "variable") if value is not None else "variable"
                    self.add(node, value if value_kind != "variable" else node, outer, name, None, value_kind, None, units)
            return
        scope = None
        if chain:  # C/C++: the name is in the declarator; `Rect::area` names its class
            name_node = chain[-1]
            while name_node.type == "qualified_identifier":
                scope = _simple_name(name_node.child_by_field_name("scope"), self.text)
                name_node = name_node.child_by_field_name("name")
            name = self.text(name_node) if name_node is not None else ""
        else:
            name_node = node.child_by_field_name("name")
            name = self.text(name_node) if name_node is not None else ""
            receiver = node.child_by_field_name("receiver")  # Go: func (r *Rect) Area()
            if receiver is not None and receiver.named_child_count:
                scope = _simple_name(receiver.named_children[0].child_by_field_name("type"), self.text)
        if name:
            self.add(node, node, outer, name, scope, kind, container, units)

    def bindings(self, node: Node, chain: list[Node]) -> list[tuple[str, Node | None]]:
        """(name, value) for each name a variable statement binds; destructuring and require() left out."""
        if node.type == "expression_statement":  # Python: NAME = value, NAME: T = value
            assignment = node.named_children[0] if node.named_child_count else None
            left = assignment.child_by_field_name("left") if assignment and assignment.type == "assignment" else None
            return [(self.text(left), None)] if left is not None and left.type == "identifier" else []
        if node.type in ("lexical_declaration", "variable_declaration"):
            found = []
            for declarator in node.named_children:
                name, value = declarator.child_by_field_name("name"), declarator.child_by_field_name("value")
                if name is not None and name.type == "identifier" and _require(value, self.text) is None:
                    found.append((self.text(name), value))
            return found
        if chain:  # C: int counter = 0;
            return [(self.text(chain[-1]), None)] if chain[-1].type == "identifier" else []
        name = node.child_by_field_name("name")  # Go const/var specs, Rust const/static
        return [(self.text(name), None)] if name is not None else []

    def extent(self, outer: Node) -> tuple[int, int, int, list[Node]]:
        """(first line with the comments above, first line, end line, the comments above) of a definition
        whose outermost node is `outer`; attributes and decorators just above it belong to it."""
        first = outer
        while (prev := first.prev_named_sibling) is not None and prev.type in self.rules.attributes:
            first = prev
        comments: list[Node] = []
        row, prev = first.start_point.row, first.prev_sibling
        while prev is not None and prev.type in self.rules.comments and _last_row(prev) >= row - 1:
            before = prev.prev_sibling
            if before is not None and _last_row(before) == prev.start_point.row:  # a trailing comment of the code above
                break
            comments.insert(0, prev)
            row, prev = prev.start_point.row, before
        return row, first.start_point.row, _last_row(outer) + 1, comments

    def add(
        self, node: Node, inner: Node, outer: Node, name: str, scope: str | None, kind: str, container: str | None,
        units: list[_Unit],
    ) -> None:
        """Record a definition; `inner` holds its body and bases (a JS binding's value, else `node`)."""
        body = _body(inner) if kind != "variable" else None
        if kind in ("class", "type") and body is None and node.type.endswith("_specifier"):
            return  # C/C++: `struct S` used as a type, or a forward declaration
        owner = scope or container
        if kind == "function" and owner:
            kind = "method"
        qualname = f"{owner}.{name}" if owner else name
        lead, start, end, comments = self.extent(outer)
        header = outer.start_byte if outer.type in _KEYWORD_WRAPPERS else _after_annotations(node)
        stop = body.start_byte if body is not None else node.end_byte
        signature = self.source[header:stop].decode("utf-8", "replace").strip()
        if kind == "variable":
            signature = signature.split("\n", 1)[0].rstrip()
        elif body is None:
            signature = signature.removesuffix(";").rstrip()
        doc = self.docstring(body) if self.language == "python" and body is not None else ""
        if not doc and comments:
            doc = textwrap.dedent("\n".join(self.lines[comments[0].start_point.row : _last_row(comments[-1]) + 1]))
        bases = tuple(b for c in inner.named_children if c.type in _BASE_LISTS for b in _base_names(c, self.text))
        self.definitions.append(
            Definition(name, qualname, kind, self.path, start, end, signature, doc, "\n".join(self.lines[start:end]), bases)
        )
        if body is None or kind == "variable":
            return
        unit = _Unit(lead, end, "class" if kind in ("class", "type") else kind, qualname)
        if kind in ("class", "type"):
            self.visit(body, name, unit.members)
        units.append(unit)

    def docstring(self, body: Node) -> str:
        first = body.named_children[0] if body.named_child_count else None
        if first is None or first.type != "expression_statement" or first.named_child_count != 1:
            return ""
        string = first.named_children[0]
        if string.type != "string":
            return ""
        return textwrap.dedent(" " * string.start_point.column + self.text(string)).strip()


# -- chunks -------------------------------------------------------------------------------------------
def _split(start: int, end: int, window: int) -> list[tuple[int, int]]:
    """[start, end) in about-`window`-line parts of equal size."""
    parts = max(1, round((end - start) / window))
    bounds = [start + (end - start) * i // parts for i in range(parts + 1)]
    return list(zip(bounds, bounds[1:]))


def _gap(lines: list[str], start: int, end: int, kind: str, name: str | None, window: int) -> list[list]:
    """Pieces for code between definitions: windows, or one piece marked small (to merge into a neighbour)."""
    filled = [i for i in range(start, end) if lines[i].strip()]
    if not filled:
        return []
    if len(filled) < 2:
        return [[filled[0], filled[0] + 1, kind, name, True]]
    return [[a, b, kind, name, False] for a, b in _split(filled[0], filled[-1] + 1, window)]


def _unit_pieces(lines: list[str], unit: _Unit, start: int, end: int, window: int) -> list[list]:
    if unit.kind == "class" and unit.members and end - start > 2 * window:
        return _layout(lines, start, end, unit.members, "class", unit.name, window)
    if end - start > 4 * window:
        return [[a, b, unit.kind, unit.name, False] for a, b in _split(start, end, window)]
    return [[start, end, unit.kind, unit.name, False]]


def _layout(lines: list[str], start: int, end: int, units: list[_Unit], kind: str, name: str | None, window: int) -> list[list]:
    """[start, end, kind, name, small] pieces covering [start, end): each unit's, and the gaps between
    (of `kind`/`name`); a gap too small to stand alone goes with the piece after it (the comment above a
    definition belongs to it), or before it at the end."""
    pieces: list[list] = []
    cursor = start
    for unit in sorted(units, key=lambda u: u.start):
        unit_start, unit_end = max(unit.start, cursor), min(unit.end, end)
        if unit_start >= unit_end:  # shares its lines with the unit before
            continue
        pieces += _gap(lines, cursor, unit_start, kind, name, window)
        pieces += _unit_pieces(lines, unit, unit_start, unit_end, window)
        cursor = unit_end
    pieces += _gap(lines, cursor, end, kind, name, window)
    kept: list[list] = []
    for i, piece in enumerate(pieces):
        if not piece[4] or len(pieces) == 1:
            kept.append(piece)
        elif i + 1 < len(pieces):
            pieces[i + 1][0] = piece[0]
        else:
            kept[-1][1] = piece[1]
    return kept


def _chunks(path: str, lines: list[str], units: list[_Unit], window: int) -> tuple[Chunk, ...]:
    chunks = []
    for start, end, kind, name, _ in _layout(lines, 0, len(lines), units, "window", None, window):
        while start < end and not lines[start].strip():
            start += 1
        while end > start and not lines[end - 1].strip():
            end -= 1
        if start < end:
            chunks.append(Chunk(path, start, end, "\n".join(lines[start:end]), kind, name))
    return tuple(chunks)


# -- the API ------------------------------------------------------------------------------------------
def parse_file(
    path: str,
    text: str,
    language: str | None = None,
    *,
    window: int = 15,
    tree: tree_sitter.Tree | None = None,
    syntax: bool = True,
) -> FileInfo | None:
    """Chunks, definitions and imports of one file; None when its language is unknown. Syntax errors
    cost only what does not parse. `tree`: the text's syntax tree when the caller has it (parsed
    incrementally from the file's previous version). `syntax=False`: no parse (it ran past its time
    budget), plain windows only."""
    language = language or language_for(path)
    if language not in _RULES:
        return None
    lines = text.split("\n")
    tree = tree or (parse(text, language) if syntax else None)
    if tree is None:  # the grammar did not load: plain windows still serve BM25
        return FileInfo(path, language, _chunks(path, lines, [], window), (), ())
    walker = _Walker(path, language, text.encode("utf-8", "surrogatepass"), lines)
    units: list[_Unit] = []
    walker.visit(tree.root_node, None, units)
    return FileInfo(path, language, _chunks(path, lines, units, window), tuple(walker.definitions), tuple(walker.imports))


def enclosing_class(info: FileInfo, line: int) -> Definition | None:
    """The innermost class (or struct, interface, trait...) whose lines hold `line`."""
    holding = [d for d in info.definitions if d.kind in ("class", "type") and d.start_line <= line < d.end_line]
    return max(holding, key=lambda d: d.start_line, default=None)


# -- identifiers near the cursor ----------------------------------------------------------------------
# A regex scan (tokens that are not identifiers are matched first and dropped) instead of a parse: it runs
# on every keystroke. It gives what tree-sitter's identifier nodes give for ordinary code; it differs
# inside f-string / template-literal interpolations (skipped) and when the window starts inside a
# multi-line string or comment.
_NUMBER = r"\d\w*"
_C_COMMENTS = r"//[^\n]*|/\*[\s\S]*?(?:\*/|\Z)"
_DOUBLE = r'"(?:\\.|[^"\\\n])*"?'
_SINGLE = r"'(?:\\.|[^'\\\n])*'?"
_BACKTICK = r"`(?:\\.|[^`\\])*`?"
_IDENTIFIER = r"([^\W\d]\w*)"
_SCANNERS = {
    "python": re.compile(
        rf"#[^\n]*|[rRbBuUfF]{{0,2}}(?:\"\"\"[\s\S]*?(?:\"\"\"|\Z)|'''[\s\S]*?(?:'''|\Z)|{_DOUBLE}|{_SINGLE})|{_NUMBER}|{_IDENTIFIER}"
    ),
    "js": re.compile(rf"{_C_COMMENTS}|{_DOUBLE}|{_SINGLE}|{_BACKTICK}|{_NUMBER}|([A-Za-z_$][\w$]*)"),
    "go": re.compile(rf"{_C_COMMENTS}|{_DOUBLE}|{_SINGLE}|{_BACKTICK}|{_NUMBER}|{_IDENTIFIER}"),
    # a quote not closed after one character is a lifetime ('a), not a char literal
    "rust": re.compile(rf"{_C_COMMENTS}|{_DOUBLE}|'(?:\\.|[^'\\\n])'|{_NUMBER}|{_IDENTIFIER}"),
    "c": re.compile(rf"{_C_COMMENTS}|{_DOUBLE}|{_SINGLE}|{_NUMBER}|{_IDENTIFIER}"),
}
_SCANNER_OF = {
    "python": "python", "javascript": "js", "typescript": "js", "tsx": "js", "go": "go", "rust": "rust", "java": "c",
    "c": "c", "cpp": "c",
}

_JS_KEYWORDS = (
    "async await break case catch class const continue debugger default delete do else export extends false "
    "finally for from function get if import in instanceof let new null of return set static super switch this "
    "throw true try typeof undefined var void while with yield"
)
_TS_KEYWORDS = (
    f"{_JS_KEYWORDS} abstract any as asserts bigint boolean declare enum implements infer interface is keyof "
    "module namespace never number object override private protected public readonly require satisfies string "
    "symbol type unique unknown"
)
_C_KEYWORDS = (
    "auto bool break case char const continue default do double else enum extern false float for goto if inline "
    "int long register restrict return short signed sizeof static struct switch true typedef union unsigned void "
    "volatile while NULL _Bool size_t ssize_t ptrdiff_t intptr_t uintptr_t int8_t int16_t int32_t int64_t "
    "uint8_t uint16_t uint32_t uint64_t"
)
_KEYWORDS: dict[str, frozenset[str]] = {
    language: frozenset(words.split())
    for language, words in {
        # self and cls are identifiers to tree-sitter, but never name anything in another file
        "python": " ".join(keyword.kwlist + keyword.softkwlist) + " self cls",
        "javascript": _JS_KEYWORDS,
        "typescript": _TS_KEYWORDS,
        "tsx": _TS_KEYWORDS,
        "go": "break case chan const continue default defer else fallthrough for func go goto if import interface "
        "map package range return select struct switch type var true false nil iota",
        "rust": "as async await break const continue crate dyn else enum extern false fn for if impl in let loop "
        "match mod move mut pub ref return self Self static struct super trait true type unsafe use where while "
        "i8 i16 i32 i64 i128 isize u8 u16 u32 u64 u128 usize f32 f64 bool char str",
        "java": "abstract assert boolean break byte case catch char class const continue default do double else "
        "enum extends final finally float for goto if implements import instanceof int interface long native new "
        "package private protected public return short static strictfp super switch synchronized this throw "
        "throws transient try var void volatile while record yield sealed permits true false null",
        "c": _C_KEYWORDS,
        "cpp": f"{_C_KEYWORDS} alignas alignof and and_eq asm bitand bitor catch char8_t char16_t char32_t class "
        "co_await co_return co_yield compl concept const_cast consteval constexpr constinit decltype delete "
        "dynamic_cast explicit export final friend mutable namespace new noexcept not not_eq nullptr operator or "
        "or_eq override private protected public reinterpret_cast requires static_assert static_cast template "
        "this thread_local throw try typeid typename using virtual wchar_t xor xor_eq",
    }.items()
}


def identifiers_near(text: str, line: int, character: int, language: str, *, lines_before: int = 10) -> list[str]:
    """Identifiers in the `lines_before` lines before the cursor and on its line up to it, nearest first,
    each once, keywords left out; `units.to_meters(` gives 'to_meters' and 'units'."""
    lines = text.split("\n", line + 1)  # the lines after the cursor's are not split
    if line >= len(lines):
        line, character = len(lines) - 1, len(lines[-1])
    window = lines[max(0, line - lines_before) : line] + [lines[line][:character]]
    scanner = _SCANNERS[_SCANNER_OF.get(language, "c")]
    keywords = _KEYWORDS.get(language, frozenset())
    found = scanner.findall("\n".join(window))
    return list(dict.fromkeys(name for name in reversed(found) if name and name not in keywords))
