"""hindsight.engine.postprocess: taking back what a prefix-only completion repeats of the suffix."""

import pytest

from hindsight.engine.postprocess import clean, trim_suffix_overlap


def accept(prefix: str, completion: str, suffix: str, mode: str = "single") -> str:
    """The document after accepting the trimmed completion at the cursor."""
    return prefix + trim_suffix_overlap(completion, suffix, mode) + suffix


# ------------------------------------------------------------------------------------------------
# single line


@pytest.mark.parametrize(
    "completion, suffix, expected",
    [
        ("a, b)", ")\nnext_line()\n", "a, b"),  # foo(|)
        (", 3]", "]\n", ", 3"),  # x = [1, 2|]
        (' there")', '")\n', " there"),  # print("hi|")
        ("a) + 1", ")\n", "a"),  # the completion closes the suffix's bracket, then goes on
        ("a) + f(b)", ")\n", "a"),
        ("f(a), g(b))", ")", "f(a), g(b)"),  # its own brackets are not the suffix's
        ('"a)", b)', ")\n", '"a)", b'),  # a bracket inside a string literal is not a close
        ("x == 1):", "):\n", "x == 1"),  # if foo(|):
        ("x);", ");\n", "x"),  # foo(|);
        ("a > 0) {", ") {\n", "a > 0"),  # if (|) {  — an end overlap of several characters
        ("value)  ", ")", "value"),  # whitespace the overlap leaves behind goes too
        ("x )", ")", "x"),
        (")", ")", ""),  # nothing left: the completion was only the closer
        ("2 * x", "x + 1\n", "2 *"),
    ],
)
def test_single_trims_what_the_rest_of_the_line_has(completion, suffix, expected):
    assert trim_suffix_overlap(completion, suffix, "single") == expected


@pytest.mark.parametrize(
    "completion, suffix",
    [
        ("a, b", ")\n"),  # no overlap
        ("a, b", ""),  # nothing after the cursor
        ("a, b)", "\nfoo)\n"),  # the rest of the cursor line is empty
        ("a, b)", "   \n)"),  # ...or only whitespace
        ("x", "xyz)"),  # `x` against `xyz`: would cut a word in two
        ("foo", "o + 1"),  # would start the overlap mid-word
        ("1, 2)", "]"),  # closes a different bracket: leave it alone
    ],
)
def test_single_leaves_alone_what_does_not_overlap(completion, suffix):
    assert trim_suffix_overlap(completion, suffix, "single") == completion


def test_single_cut_needs_something_left():
    # The completion closes the suffix's bracket straight away and goes on: cutting there would leave
    # nothing, so the end overlap rule decides instead (no overlap here).
    assert trim_suffix_overlap(") + 1", ")", "single") == ") + 1"


def test_single_cut_only_when_the_rest_is_closers():
    # `foo(|) + y` — the rest is more than closers: only the end overlap applies.
    assert trim_suffix_overlap("a) + 1", ") + y\n", "single") == "a) + 1"
    assert trim_suffix_overlap("a) + y", ") + y\n", "single") == "a"


def test_single_string_with_escaped_quote():
    assert trim_suffix_overlap(r'say \"hi\"")', '")', "single") == r"say \"hi\""


def test_single_gives_up_on_an_unterminated_string():
    # An unterminated string literal before the closer: no cut; the end overlap still applies.
    assert trim_suffix_overlap("'a, b)", ")", "single") == "'a, b"


def test_single_accepting_gives_the_intended_line():
    assert accept("foo(", "a, b)", ")\n") == "foo(a, b)\n"
    assert accept("x = [1, 2", ", 3]", "]\n") == "x = [1, 2, 3]\n"
    assert accept('print("hi', ' there")', '")\n') == 'print("hi there")\n'
    assert accept("total = add(", "a) + 1", ")\n") == "total = add(a)\n"


# ------------------------------------------------------------------------------------------------
# multi line


def test_multi_drops_trailing_lines_the_suffix_starts_with():
    completion = "    x = load()\n    y = x * 2\n    return y"
    suffix = "\n\n    return y\n\ndef g():\n"
    assert trim_suffix_overlap(completion, suffix, "multi") == "    x = load()\n    y = x * 2"


def test_multi_compares_lines_with_indentation_and_skips_blank_lines():
    completion = "  a();\n  b();\n\n  c();\n}"
    suffix = "\n\n  c();\n\n}\n"
    assert trim_suffix_overlap(completion, suffix, "multi") == "  a();\n  b();"
    # A deeper `c();` is the completion's own line, not the suffix again.
    deeper = "  a();\n  b();\n\n    c();\n}"
    assert trim_suffix_overlap(deeper, suffix, "multi") == "  a();\n  b();\n\n    c();\n}"


def test_multi_drops_a_closer_the_suffix_has():
    assert trim_suffix_overlap("  return x;\n}", "\n}\n", "multi") == "  return x;"
    # `};` against a suffix `}`: the brace is there already.
    assert trim_suffix_overlap("  return x;\n};", "\n}\n", "multi") == "  return x;"
    assert trim_suffix_overlap("  go();\n});", "\n});\n", "multi") == "  go();"


def test_multi_keeps_an_inner_closer():
    # The final `}` repeats the suffix; the `  }` before it closes the completion's own `if`.
    completion = "  if (a) {\n    b();\n  }\n}"
    assert trim_suffix_overlap(completion, "\n}\n", "multi") == "  if (a) {\n    b();\n  }"


def test_multi_keeps_a_closer_the_suffix_lacks():
    completion = "  return x;\n}"
    assert trim_suffix_overlap(completion, "\n\nfunction g() {}\n", "multi") == completion
    assert trim_suffix_overlap(completion, "", "multi") == completion


def test_multi_without_overlap_is_unchanged():
    completion = "    total = sum(xs)\n    return total"
    assert trim_suffix_overlap(completion, "\n\nprint(total)\n", "multi") == completion


def test_multi_only_the_tail_counts():
    # The suffix's first line appears in the middle of the completion, not at its end: keep all.
    completion = "    a = 1\n    return a\n    b = 2"
    assert trim_suffix_overlap(completion, "\n    return a\n", "multi") == completion


def test_multi_a_completion_that_only_repeats_the_suffix_becomes_empty():
    assert trim_suffix_overlap("    pass", "\n    pass\n", "multi") == ""


# ------------------------------------------------------------------------------------------------
# clean


@pytest.mark.parametrize(
    "completion, mode, expected",
    [
        ("foo(x)  ", "single", "foo(x)"),
        ("foo(x)\nbar()", "single", "foo(x)"),
        ("foo(x) \r\nbar()", "single", "foo(x)"),
        ("\nbar()", "single", ""),
        ("  leading kept", "single", "  leading kept"),
        ("a = 1  \n    b = 2\t\n\n   \n", "multi", "a = 1\n    b = 2"),
        ("a = 1\r\n    b = 2\r\n", "multi", "a = 1\n    b = 2"),
        ("a = 1\n\n    b = 2", "multi", "a = 1\n\n    b = 2"),
        ("", "multi", ""),
    ],
)
def test_clean(completion, mode, expected):
    assert clean(completion, mode) == expected


def test_multi_line_trim_respects_indentation():
    # `return False` inside the new block is not the `return False` that follows the block.
    completion = "    for x in xs:\n        if x:\n            return False"
    suffix = "\n    return False\n"
    assert trim_suffix_overlap(completion, suffix, "multi") == completion
    # The same line at the same indentation is the suffix written again: dropped.
    completion = "    for x in xs:\n        total += x\n    return total"
    assert trim_suffix_overlap(completion, "\n    return total\n", "multi") == "    for x in xs:\n        total += x"
