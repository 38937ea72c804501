"""hindsight.syntax: language detection and cached tree-sitter parsers (real grammars, no mocks)."""

import pytest

from hindsight import syntax


@pytest.mark.parametrize(
    "path, language",
    [
        ("a.py", "python"),
        ("stubs/a.pyi", "python"),
        ("a.js", "javascript"),
        ("a.mjs", "javascript"),
        ("a.cjs", "javascript"),
        ("a.jsx", "javascript"),
        ("a.ts", "typescript"),
        ("a.mts", "typescript"),
        ("a.cts", "typescript"),
        ("a.tsx", "tsx"),
        ("main.go", "go"),
        ("lib.rs", "rust"),
        ("A.java", "java"),
        ("x.c", "c"),
        ("x.h", "c"),
        ("x.cc", "cpp"),
        ("x.cpp", "cpp"),
        ("x.cxx", "cpp"),
        ("x.hpp", "cpp"),
        ("x.hh", "cpp"),
        ("x.hxx", "cpp"),
        ("/home/u/src/Module.PY", "python"),
        ("file:///home/u/src/app.ts", "typescript"),
        ("file:///home/u/my%20dir/main.rs", "rust"),
        ("file:///C:/work/x.cpp", "cpp"),
    ],
)
def test_language_for_known_extensions(path, language):
    assert syntax.language_for(path) == language


@pytest.mark.parametrize("path", ["README.md", "Makefile", "a.pyc", "x.d.json", "", "file:///tmp/noext"])
def test_language_for_unknown_is_none(path):
    assert syntax.language_for(path) is None


@pytest.mark.parametrize(
    "language_id, path, language",
    [
        ("python", "notes.txt", "python"),
        ("javascriptreact", "a.txt", "javascript"),
        ("typescriptreact", "a.ts", "tsx"),  # the languageId wins over the extension
        ("typescript", "a.tsx", "typescript"),
        ("go", "x", "go"),
        ("rust", "x", "rust"),
        ("java", "x", "java"),
        ("c", "x.cpp", "c"),
        ("cpp", "x.c", "cpp"),
        ("javascript", "x", "javascript"),
        ("plaintext", "file:///a/b.go", "go"),  # unknown id: fall back to the extension
        (None, "b.java", "java"),
        ("", "b.rs", "rust"),
        ("markdown", "README.md", None),
    ],
)
def test_normalize_language(language_id, path, language):
    assert syntax.normalize_language(language_id, path) == language


@pytest.mark.parametrize("language", syntax.LANGUAGES)
def test_parser_for_every_language_is_cached(language):
    parser = syntax.parser_for(language)
    assert parser is not None
    assert syntax.parser_for(language) is parser


@pytest.mark.parametrize("language", ["cobol", "", None, 3, ["python"]])
def test_parser_for_unknown_is_none(language):
    assert syntax.parser_for(language) is None


@pytest.mark.parametrize(
    "language, source, root, child",
    [
        ("python", "def f():\n    return 1\n", "module", "function_definition"),
        ("javascript", "function f() { return 1; }\n", "program", "function_declaration"),
        ("typescript", "let x: number = 1;\n", "program", "lexical_declaration"),
        ("tsx", "const a = <div>{x}</div>;\n", "program", "lexical_declaration"),
        ("go", "package main\n\nfunc main() {}\n", "source_file", "package_clause"),
        ("rust", "fn main() {}\n", "source_file", "function_item"),
        ("java", "class A { void f() {} }\n", "program", "class_declaration"),
        ("c", "int main(void) { return 0; }\n", "translation_unit", "function_definition"),
        ("cpp", "namespace n { int f(); }\n", "translation_unit", "namespace_definition"),
    ],
)
def test_parse_real_source(language, source, root, child):
    tree = syntax.parse(source, language)
    assert tree.root_node.type == root
    assert not tree.root_node.has_error
    assert tree.root_node.children[0].type == child


def test_typescript_and_tsx_are_different_grammars():
    # `<T>x` is a type assertion in .ts and an unclosed JSX element in .tsx.
    source = "let y = <T>x;\n"
    assert not syntax.parse(source, "typescript").root_node.has_error
    assert syntax.parse(source, "tsx").root_node.has_error


def test_parse_unknown_language_is_none():
    assert syntax.parse("anything", "cobol") is None
    assert syntax.parse("anything", None) is None


def test_parse_accepts_bytes_and_non_ascii():
    text = 'def café(x):\n    return "ü"\n'
    from_str = syntax.parse(text, "python")
    from_bytes = syntax.parse(text.encode("utf-8"), "python")
    assert str(from_str.root_node) == str(from_bytes.root_node)
    name = from_str.root_node.children[0].child_by_field_name("name")
    assert name.text.decode("utf-8") == "café"


def test_parse_with_old_tree_matches_fresh_parse():
    old_text = b"def f():\n    return 1\n"
    new_text = b"def f():\n    x = 2\n    return x\n"
    tree = syntax.parse(old_text, "python")
    # Replace "return 1" (bytes 13..21) with "x = 2\n    return x".
    tree.edit(
        start_byte=13,
        old_end_byte=21,
        new_end_byte=31,
        start_point=(1, 4),
        old_end_point=(1, 12),
        new_end_point=(2, 12),
    )
    incremental = syntax.parse(new_text, "python", old_tree=tree)
    assert str(incremental.root_node) == str(syntax.parse(new_text, "python").root_node)
