"""hindsight.engine.stops: the single/multi-line decision (real tree-sitter parses) and the streaming stop rule."""

import random
import re

import pytest

from hindsight.engine import stops

from hindsight import syntax
from hindsight.engine.stops import StopRule, completion_mode

CURSOR = "█"


def mode_at(marked: str, language: str | None) -> str:
    """completion_mode for a source with the cursor marked by █."""
    offset = marked.index(CURSOR)
    text = marked.replace(CURSOR, "", 1)
    before = text[:offset]
    line = before.count("\n")
    character = offset - (before.rfind("\n") + 1)
    return completion_mode(text, line, character, language)


# ------------------------------------------------------------------------------------------------
# completion_mode: where a block opens

MULTI_CASES = [
    # Python: every compound-statement header, empty body
    ("python", "def f():\n    █"),
    ("python", "def f():█"),
    ("python", "def f(a, b):\n    █\n"),
    ("python", "async def f():\n    █"),
    ("python", "if x:\n    █"),
    ("python", "if x:\n    a()\nelif y:\n    █\nz = 1\n"),
    ("python", "if x:\n    █\nelse:\n    pass\n"),
    ("python", "if x:\n    a()\nelse:\n    █"),
    ("python", "class A:\n    █"),
    ("python", "class A(Base, metaclass=M):\n    █\n"),
    ("python", "class A:\n    x = 1\n\n    def f(self):\n        █\n\n    def g(self):\n        pass\n"),
    ("python", "for i in range(3):\n    █"),
    ("python", "while True:\n    █"),
    ("python", "with open(p) as f:\n    █"),
    ("python", "try:\n    █\nexcept E:\n    pass\n"),
    ("python", "try:\n    a()\nexcept (E, F) as e:\n    █"),
    ("python", "try:\n    a()\nfinally:\n    █"),
    ("python", "match x:\n    █"),
    ("python", "match x:\n    case [a, b]:\n        █"),
    ("python", "@decorator\ndef f():\n    █\n\n\ndef g():\n    return 1\n"),
    ("python", "def f(\n    a,\n    b,\n):\n    █"),
    ("python", "def f():\n\n\n    █\n"),  # blank lines between the header and the cursor
    ("python", "def f():\n█"),  # cursor at column 0 on the next line
    ("python", "def f():  # a comment after the header\n    █"),
    ("python", "for x in y:\n    # a comment line inside the empty body\n    █"),
    ("python", "def f():\n    █\n    # only a comment below\n"),
    ("python", "x = foo(\ndef f():\n    █"),  # the ':' lands in an ERROR node
    ("python", "def f(é):\n    █"),  # non-ASCII before the cursor
    ("python", "def f():\r\n    █\r\n"),  # CRLF line endings
    ("python", "def f():\n    █    "),  # only whitespace after the cursor
    # JavaScript
    ("javascript", "function f() {\n  █"),
    ("javascript", "function f() {\n  █\n}\n"),
    ("javascript", "function f() {█"),
    ("javascript", "if (x) {\n  █"),
    ("javascript", "if (x) {\n  █\n}"),
    ("javascript", "if (a) {\n  b();\n} else {\n  █\n}"),
    ("javascript", "for (let i = 0; i < n; i++) {\n  █\n}"),
    ("javascript", "while (x) {\n  █"),
    ("javascript", "switch (x) {\n  █\n}"),
    ("javascript", "try {\n  █\n} catch (e) {}\n"),
    ("javascript", "class A {\n  █\n}"),
    ("javascript", "class A {\n  f() {\n    █\n  }\n}"),
    ("javascript", "class A {\n  f() {\n    █"),
    ("javascript", "foo(() => {\n  █\n});"),
    ("javascript", "const f = async () => {\n  █\n};"),
    ("javascript", "{\n  █"),
    ("javascript", "function f() { // a comment\n  █\n}"),
    ("javascript", "function f() {\n  /* a\n   * block comment */\n  █\n}"),
    ("javascript", "function a() {\n  █\nfunction b() { return 1; }\n"),  # no closer yet
    ("javascript", "if (a &&\n    b) {\n    █\n}"),
    # TypeScript / TSX
    ("typescript", "function f(): void {\n  █\n}"),
    ("typescript", "class A implements B {\n  private f(): number {\n    █\n  }\n}"),
    ("typescript", "interface I {\n  █\n}"),
    ("typescript", "enum E {\n  █\n}"),
    ("tsx", "export function C(): JSX.Element {\n  █\n}"),
    ("tsx", "const C = () => {\n  █\n};"),
    # Go
    ("go", "package main\n\nfunc main() {\n\t█"),
    ("go", "package main\n\nfunc main() {\n\t█\n}\n"),
    ("go", "func (s *S) M() error {\n\t█\n}"),
    ("go", "func f() {\n\tif x > 0 {\n\t\t█\n\t}\n}"),
    ("go", "func f() {\n\tfor {\n\t\t█\n\t}\n}"),
    ("go", "func f() {\n\tswitch x {\n\t█\n\t}\n}"),
    ("go", "func f() {\n\tgo func() {\n\t\t█\n\t}()\n}"),
    ("go", "type S struct {\n\t█\n}"),
    ("go", "type I interface {\n\t█\n}"),
    # Rust
    ("rust", "fn main() {\n    █"),
    ("rust", "fn main() {\n    █\n}"),
    ("rust", "impl S {\n    █\n}"),
    ("rust", "impl S {\n    fn f(&self) -> u32 {\n        █\n    }\n}"),
    ("rust", "struct S {\n    █\n}"),
    ("rust", "trait T {\n    █\n}"),
    ("rust", "fn f() {\n    match x {\n        █\n    }\n}"),
    ("rust", "fn f() {\n    for i in 0..3 {\n        █\n    }\n}"),
    ("rust", "fn f() {\n    let c = |x: u32| {\n        █\n    };\n}"),
    # Java
    ("java", "class A {\n    public void f() {\n        █\n    }\n}"),
    ("java", "class A {\n    public void f() {\n        █"),
    ("java", "public class A {\n    █\n}"),
    ("java", "class A {\n    A() {\n        █\n    }\n}"),
    ("java", "class A {\n    void f() {\n        if (x) {\n            █\n        }\n    }\n}"),
    ("java", "class A {\n    void f() {\n        switch (x) {\n            █\n        }\n    }\n}"),
    ("java", "interface I {\n    █\n}"),
    ("java", "class A {\n    @Override\n    public String toString() {\n        █\n    }\n}"),
    # C
    ("c", "int main() {\n    █"),
    ("c", "int main() {\n    █\n}"),
    ("c", "int main(void) {\n    if (x) {\n        █\n    }\n}"),
    ("c", "static inline int f(int x)\n{\n    █\n}"),
    ("c", "struct S {\n    █\n};"),
    ("c", "int main() {\n    while (x) {\n        █\n    }\n}"),
    # C++
    ("cpp", "int main() {\n    █"),
    ("cpp", "int main() {\n    █\n}"),
    ("cpp", "class A {\npublic:\n    void f() {\n        █\n    }\n};"),
    ("cpp", "class A {\n    █\n};"),
    ("cpp", "namespace n {\n█\n}"),
    ("cpp", "void A::f() const {\n    █\n}"),
    ("cpp", "template <typename T>\nT f(T x) {\n    █\n}"),
    ("cpp", "auto l = [&](int x) {\n    █\n};"),
    ("cpp", "int main() {\n    for (auto& x : xs) {\n        █\n    }\n}"),
]

SINGLE_CASES = [
    # Python
    ("python", "x = {█"),
    ("python", "x = {\n    █"),
    ("python", "foo(█"),
    ("python", "foo(\n    █"),
    ("python", "x = 1█"),
    ("python", "x = fo█o(1)"),  # mid-line
    ("python", "def f():█  # trailing comment after the cursor"),
    ("python", "def f():\n    █x = 1"),  # content after the cursor
    ("python", "def f():\n    █\n    return 1\n"),  # the body already has a statement
    ("python", "def f():\n    return 1\n█"),
    ("python", "def f():\n    \"\"\"Doc.\"\"\"\n    █"),
    ("python", "if x:\n    # a comment█"),  # the cursor ends a comment line
    ("python", "# def f():\n█"),  # the header is inside a comment
    ("python", 's = """\ndef f():\n    █\n"""\n'),  # ...or inside a string
    ("python", "f = lambda:█"),
    ("python", "def f(x:█"),
    ("python", 'd = {"a":\n    █'),
    ("python", "x[1:█"),
    ("python", "if x: return 1\n█"),
    ("python", "█"),
    # JavaScript
    ("javascript", "const x = {█"),
    ("javascript", "const x = {\n  █"),
    ("javascript", "const x = {\n  █\n};"),
    ("javascript", "foo(█"),
    ("javascript", "f({\n  █"),
    ("javascript", "return {\n  █"),
    ("javascript", "function f() {█}"),  # the auto-inserted closer is on the cursor line
    ("javascript", "function f() {\n  █\n  return 1;\n}"),
    ("javascript", "function f() {\n  // a comment█\n}"),
    ("javascript", "let a = b + █"),
    ("javascript", "const el = <div>{\n  █"),
    # TypeScript
    ("typescript", "const x: T = {\n  █\n};"),
    ("typescript", "function f(): void {\n  █\n  g();\n}"),
    # Go
    ("go", "func f() {\n\tx := T{\n\t\t█\n\t}\n}"),
    ("go", "var m = map[string]int{\n\t█\n}"),
    ("go", "func f() {\n\treturn &T{\n\t\t█"),
    ("go", "func main() {\n\t█\n\tfmt.Println(1)\n}"),
    # Rust
    ("rust", "fn f() {\n    let s = S {\n        █\n    };\n}"),
    ("rust", "use std::{\n    █"),
    ("rust", "fn main() {\n    █\n    println!(\"hi\");\n}"),
    # Java
    ("java", "class A {\n    int[] a = {\n        █\n    };\n}"),
    ("java", "class A {\n    void f() {\n        g(█);\n    }\n}"),
    # C / C++
    ("c", "int a[] = {\n    █\n};"),
    ("c", "struct S s = {\n    █\n};"),
    ("c", "#define X {\n█"),
    ("c", "int main() {\n    █\n    return 0;\n}"),
    ("cpp", "std::vector<int> v = {\n    █\n};"),
    ("cpp", "int main() {\n    std::vector<int> v{\n        █\n    };\n}"),  # brace initializer
    ("cpp", "int main() {\n    foo(█\n}"),
]


@pytest.mark.parametrize("language, marked", MULTI_CASES)
def test_multi_where_an_empty_block_opens(language, marked):
    assert mode_at(marked, language) == "multi"


@pytest.mark.parametrize("language, marked", SINGLE_CASES)
def test_single_everywhere_else(language, marked):
    assert mode_at(marked, language) == "single"


@pytest.mark.parametrize("language", [None, "cobol", "markdown"])
def test_unknown_language_is_single(language):
    assert mode_at("def f():\n    █", language) == "single"
    assert mode_at("function f() {\n  █", language) == "single"


def test_the_opener_must_be_the_languages_own():
    # A ':' opens nothing in JavaScript, a '{' nothing in Python.
    assert mode_at("label:\n█", "javascript") == "single"
    assert mode_at("if x {\n    █", "python") == "single"


@pytest.mark.parametrize("line, character", [(-1, 0), (5, 0), (99, 3)])
def test_cursor_outside_the_document_is_single(line, character):
    assert completion_mode("def f():\n    ", line, character, "python") == "single"


def test_empty_document_is_single():
    assert completion_mode("", 0, 0, "python") == "single"
    assert completion_mode("", 0, 0, "go") == "single"


def test_character_past_the_end_of_the_line_is_clamped():
    assert completion_mode("def f():\n    \n", 1, 80, "python") == "multi"
    assert completion_mode("def f():\n    \n", 0, 80, "python") == "multi"


def test_character_counts_str_characters_not_bytes():
    text = 'def f():\n    s = "日本語"\n    if s:\n        \n'
    # Line 3 is blank: multi. Line 1 mid-line after the multi-byte string: single.
    assert completion_mode(text, 3, 8, "python") == "multi"
    assert completion_mode(text, 1, 11, "python") == "single"


def test_a_sequence_of_edits_matches_fresh_parses():
    """The tree reused between calls is edited in step with the text: after every change, the answer
    and the tree equal those from a parse from scratch."""
    rng = random.Random(7)
    base = (
        "class A:\n    def f(self):\n        return 1\n\n"
        + "".join(f"def g{i}(x):\n    if x > {i}:\n        return x\n    return {i}\n\n" for i in range(40))
    )
    text = base
    stops._last_parse.clear()
    checked = 0
    for step in range(80):
        rows = text.split("\n")
        at = rng.randrange(len(rows))
        choice = rng.random()
        if choice < 0.4:
            rows.insert(at, "    if y:")
            rows.insert(at + 1, "        ")
            line, character = at + 1, 8
        elif choice < 0.7:
            rows[at] = rows[at] + "  # é"
            line, character = at, len(rows[at])
        else:
            del rows[at]
            line, character = max(0, at - 1), 0
        text = "\n".join(rows)
        got = completion_mode(text, line, character, "python")
        kept = dict(stops._last_parse)
        if "python" in kept:  # the reused tree is the tree of the text it was parsed from
            data, tree = kept["python"]
            assert str(tree.root_node) == str(syntax.parse(data, "python").root_node), step
            checked += 1
        stops._last_parse.clear()
        assert got == completion_mode(text, line, character, "python"), (step, line)
        stops._last_parse.clear()
        stops._last_parse.update(kept)  # carry on from the reused tree
    assert checked > 30


def test_edits_in_a_brace_language_keep_matching_fresh_parses():
    stops._last_parse.clear()
    text = "function f() {\n  \n}\n" * 30
    results = []
    for i in range(0, 30, 3):
        rows = text.split("\n")
        line = i * 3 + 1
        results.append(completion_mode(text, line, 2, "javascript"))
        stops._last_parse.clear()
        assert completion_mode(text, line, 2, "javascript") == results[-1]
        rows[line] = "  x();"  # fill this body: now it has a statement
        text = "\n".join(rows)
        assert completion_mode(text, line, 0, "javascript") == "single"
    assert results == ["multi"] * 10


# ------------------------------------------------------------------------------------------------
# StopRule


def chars(text):
    return list(text)


def tokens(text):
    """Token-like chunks: runs of word characters, runs of spaces, newlines, single punctuation."""
    return re.findall(r"\w+| +|\t+|\n|[^\w\s]", text)


def run(rule_args, text, split):
    """Feed `text` chunk by chunk; (result, how much was fed when it stopped or None if it ran out)."""
    rule = StopRule(**rule_args)
    fed = ""
    for chunk in split(text):
        fed += chunk
        result = rule.feed(fed)
        if result is not None:
            return result, len(fed)
    return rule.finish(fed), None


def whole(text):
    return [text]


SPLITS = [chars, tokens, whole]


@pytest.mark.parametrize("split", SPLITS)
def test_single_stops_at_the_first_newline(split):
    args = dict(mode="single", cursor_line_prefix="x = ", suffix="\n")
    result, stopped = run(args, "foo(1, 2)\nbar()\n", split)
    assert result == "foo(1, 2)"
    if split is not whole:  # it stopped early, before generating the rest
        assert stopped is not None and stopped <= len("foo(1, 2)\n")


def test_single_starting_with_a_newline_keeps_nothing():
    rule = StopRule("single", cursor_line_prefix="x = ", suffix="")
    assert rule.feed("\n") == ""
    assert rule.finish("\nfoo") == ""


def test_single_without_a_newline_runs_to_the_end():
    rule = StopRule("single", cursor_line_prefix="x = ", suffix="")
    assert rule.feed("foo(") is None
    assert rule.feed("foo(1") is None
    assert rule.finish("foo(1)") == "foo(1)"


@pytest.mark.parametrize("split", SPLITS)
def test_multi_stops_before_a_dedented_line(split):
    args = dict(mode="multi", cursor_line_prefix="    ", suffix="\n")
    completion = "x = compute()\n    return x\n\ndef other():\n    pass\n"
    result, stopped = run(args, completion, split)
    assert result == "x = compute()\n    return x"
    if split is not whole:  # it stopped at the dedented line's first word, not at its end
        assert stopped is not None and stopped <= completion.index("def other") + len("def")


@pytest.mark.parametrize("split", SPLITS)
def test_multi_from_the_header_line(split):
    # Cursor right after the ':' of `def f():` — the completion starts with the newline.
    args = dict(mode="multi", cursor_line_prefix="def f():", suffix="\n\nprint(f())\n")
    completion = "\n    total = 0\n    for i in range(3):\n        total += i\n    return total\n\nprint(total)\n"
    result, _ = run(args, completion, split)
    assert result == "\n    total = 0\n    for i in range(3):\n        total += i\n    return total"


@pytest.mark.parametrize("split", SPLITS)
def test_multi_body_indentation_counts_the_cursor_line_prefix(split):
    # The cursor sits at column 8 on a blank line; the completion begins without indentation.
    args = dict(mode="multi", cursor_line_prefix="        ", suffix="\n")
    completion = "a = 1\n        b = 2\n    return a + b\n"
    result, _ = run(args, completion, split)
    assert result == "a = 1\n        b = 2"


@pytest.mark.parametrize("split", SPLITS)
def test_multi_stops_after_max_lines(split):
    args = dict(mode="multi", cursor_line_prefix="    ", suffix="\n", max_lines=4)
    completion = "".join(f"x{i} = {i}\n    " for i in range(10))
    result, stopped = run(args, completion, split)
    assert result == "x0 = 0\n    x1 = 1\n    x2 = 2\n    x3 = 3"
    if split is not whole:  # it stopped early, before generating the rest
        assert stopped is not None and stopped < len(completion)


def test_multi_default_max_lines_is_twelve():
    rule = StopRule("multi", cursor_line_prefix="", suffix="")
    assert rule.finish("\n".join(f"x{i} = {i}" for i in range(30))).count("\n") == 11


@pytest.mark.parametrize("split", SPLITS)
def test_multi_stops_at_two_blank_lines(split):
    args = dict(mode="multi", cursor_line_prefix="    ", suffix="\n")
    completion = "a = 1\n\n    b = 2\n\n\n    c = 3\n"
    result, stopped = run(args, completion, split)
    assert result == "a = 1\n\n    b = 2"  # one blank line inside the body is fine
    if split is not whole:  # it stopped early, before generating the rest
        assert stopped is not None and stopped < len(completion)


def test_multi_blank_lines_with_whitespace_count_as_blank():
    rule = StopRule("multi", cursor_line_prefix="  ", suffix="")
    assert rule.finish("a();\n   \n\t\n  b();") == "a();"


def test_multi_keeps_no_trailing_blank_lines_or_whitespace():
    rule = StopRule("multi", cursor_line_prefix="    ", suffix="")
    assert rule.finish("x = 1   \n    y = 2\n\n    ") == "x = 1   \n    y = 2"


@pytest.mark.parametrize("split", SPLITS)
def test_multi_drops_a_closer_the_suffix_already_has(split):
    args = dict(mode="multi", cursor_line_prefix="  ", suffix="\n}\n\nfunction g() {}\n")
    completion = "const x = 1;\n  return x;\n}\n\nfunction h() {\n"
    result, stopped = run(args, completion, split)
    assert result == "const x = 1;\n  return x;"
    if split is not whole:  # it stopped early, before generating the rest
        assert stopped is not None and stopped <= completion.index("}\n") + 2


@pytest.mark.parametrize("split", SPLITS)
def test_multi_keeps_a_closer_the_suffix_lacks(split):
    args = dict(mode="multi", cursor_line_prefix="  ", suffix="\n\nfunction g() {}\n")
    completion = "const x = 1;\n  return x;\n}\n\nfunction h() {\n"
    result, _ = run(args, completion, split)
    assert result == "const x = 1;\n  return x;\n}"


@pytest.mark.parametrize(
    "closer, suffix, kept",
    [
        ("});", "\n});\n", False),
        ("})", "\n});\n", False),  # the suffix line starts with the closer
        ("};", "\n}\n", False),  # the suffix has the brace; a second one would unbalance the file
        ("};", "\n};\n", False),
        ("}", "\n  \n}\n", False),  # blank lines before the suffix's closer
        ("});", "\n", True),
        ("}", "\nfoo();\n", True),
        ("}", "", True),
    ],
)
def test_multi_closer_variants(closer, suffix, kept):
    rule = StopRule("multi", cursor_line_prefix="  ", suffix=suffix)
    result = rule.finish(f"a();\n  b();\n{closer}\nmore();\n")
    assert result == "a();\n  b();" + (f"\n{closer}" if kept else "")


def test_multi_a_dedented_line_that_is_more_than_a_closer_is_dropped():
    rule = StopRule("multi", cursor_line_prefix="    ", suffix="\n  }\n")
    assert rule.finish("a();\n  } else {\n    b();\n  }\n") == "a();"


def test_multi_nested_blocks_are_kept_whole():
    rule = StopRule("multi", cursor_line_prefix="  ", suffix="\n}\n")
    completion = "if (x) {\n    y();\n  }\n  z();\n}\nfunction next() {}\n"
    assert rule.finish(completion) == "if (x) {\n    y();\n  }\n  z();"


def test_multi_with_tabs():
    rule = StopRule("multi", cursor_line_prefix="\t", suffix="\n")
    assert rule.finish("x := 1\n\treturn x\n}\n\nfunc g() {}\n") == "x := 1\n\treturn x\n}"


def test_multi_closer_straight_away_means_an_empty_block():
    rule = StopRule("multi", cursor_line_prefix="", suffix="\n}\n")
    assert rule.finish("}\n\nfunction g() {}") == ""
    rule = StopRule("multi", cursor_line_prefix="", suffix="\n")
    assert rule.finish("}\n\nfunction g() {}") == "}"


def test_multi_waits_for_a_whole_closer_line():
    rule = StopRule("multi", cursor_line_prefix="  ", suffix="\n")
    assert rule.feed("a();\n}") is None  # might still become `} else {`
    assert rule.feed("a();\n})") is None
    assert rule.feed("a();\n});\n") == "a();\n});"


def test_multi_waits_while_a_line_is_incomplete():
    rule = StopRule("multi", cursor_line_prefix="    ", suffix="\n")
    assert rule.feed("x = 1") is None
    assert rule.feed("x = 1\n") is None
    assert rule.feed("x = 1\n    ") is None  # indentation alone decides nothing yet
    assert rule.feed("x = 1\n    y") is None
    assert rule.feed("x = 1\n    y = 2\nz") == "x = 1\n    y = 2"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("return 1\ndef g():\n    pass", "return 1"),
        ("a = 1\n    b = 2", "a = 1\n    b = 2"),  # the trailing incomplete line counts as a line
        ("a = 1\n    b = 2\nc", "a = 1\n    b = 2"),  # ...and may end the block
        ("a = 1\n\n\n    b = 2", "a = 1"),
        ("", ""),
        ("\n\n", ""),
    ],
)
def test_finish_applies_the_same_rules(text, expected):
    rule = StopRule("multi", cursor_line_prefix="    ", suffix="")
    assert rule.finish(text) == expected


@pytest.mark.parametrize("split", [chars, tokens])
def test_streaming_and_finish_agree(split):
    completions = [
        "x = 1\n    if x:\n        y()\n    return x\nprint(2)\n",
        "a();\n  b();\n}\n",
        "\n    pass\n\n\n",
        "".join(f"v{i}\n    " for i in range(20)),
    ]
    for completion in completions:
        args = dict(mode="multi", cursor_line_prefix="    ", suffix="\n")
        streamed, _ = run(args, completion, split)
        assert streamed == StopRule(**args).finish(completion)


def test_invalid_mode_is_rejected():
    with pytest.raises(ValueError):
        StopRule("paragraph", cursor_line_prefix="", suffix="")
