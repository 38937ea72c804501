"""Prompt assembly: budget, anchoring (the cache-friendly layout), context snippets."""

from hindsight.engine.engine import split_at_cursor
from hindsight.engine.prompt import PromptBudget, PromptBuilder
from hindsight.request import Snippet


def words(text: str) -> int:
    """A stand-in tokenizer for budgeting: one token per whitespace-separated word."""
    return len(text.split())


def doc(n: int) -> str:
    return "\n".join(f"value_{i} = compute({i}) + offset" for i in range(n))


def test_prefix_fits_budget_and_ends_at_cursor():
    builder = PromptBuilder(words, PromptBudget(prefix_tokens=100, anchor_lines=8))
    text = doc(200)
    p = builder.build(text, 150, 9, path="a.py", language="python")
    assert p.text.endswith(text.split("\n")[150][:9])
    assert p.tokens <= 100 + words(p.header) + 1
    assert p.window_start_line % 8 == 0
    assert p.suffix.startswith(text.split("\n")[150][9:])
    assert p.header == "# a.py\n"


def test_window_start_is_anchored_while_typing():
    builder = PromptBuilder(words, PromptBudget(prefix_tokens=100, anchor_lines=16))
    lines = doc(300).split("\n")
    starts = []
    prompts = []
    for line in range(120, 160):
        text = "\n".join(lines[: line + 1])
        for col in range(0, len(lines[line]), 5):
            p = builder.build(text, line, col, path="a.py", language="python")
            starts.append(p.window_start_line)
            prompts.append(p.text)
    # The window start moves rarely (every anchor step), never line by line.
    moves = sum(1 for a, b in zip(starts, starts[1:]) if a != b)
    assert 0 < moves <= 40 // 16 + 1
    # Between moves, each prompt extends the previous one: the cached prefix survives.
    same_start = [(a, b) for a, b, s, t in zip(prompts, prompts[1:], starts, starts[1:]) if s == t]
    assert same_start and all(b.startswith(a[: len(a) - 40]) for a, b in same_start)


def test_short_file_starts_at_line_zero():
    builder = PromptBuilder(words, PromptBudget(prefix_tokens=1000))
    p = builder.build(doc(10), 5, 3, language="python")
    assert p.window_start_line == 0
    assert p.prefix == "\n".join(doc(10).split("\n")[:5]) + "\n" + doc(10).split("\n")[5][:3]
    assert p.header == ""


def test_context_snippets_respect_their_budget_and_come_first():
    builder = PromptBuilder(words, PromptBudget(prefix_tokens=50, context_tokens=20))
    small = Snippet("util.py:1-2", "def helper(x):\n    return x", 2.0)
    big = Snippet("big.py:1-40", " ".join(["word"] * 100), 1.0)
    p = builder.build(doc(5), 4, 0, path="main.py", language="python", context=[big, small])
    assert p.context == [small]
    assert p.text.startswith("# util.py:1-2\ndef helper(x):")
    assert "word word" not in p.text
    assert p.text.index("# main.py") > p.text.index("helper")


def test_comment_syntax_follows_language():
    builder = PromptBuilder(words)
    assert builder.build("x", 0, 1, path="a.js", language="javascript").header == "// a.js\n"


def test_out_of_range_positions_are_clamped():
    builder = PromptBuilder(words)
    p = builder.build("ab\ncd", 9, 9, language="python")
    assert p.prefix == "ab\ncd" and p.suffix == ""


def test_split_at_cursor():
    assert split_at_cursor("ab\ncdef\ng", 1, 2) == ("ab\ncd", "ef", "ef\ng")


def test_heal_text_takes_the_partial_word_and_the_space_before_it():
    from hindsight.engine.engine import heal_text

    assert heal_text("    return self.wid") == "wid"
    assert heal_text("    return") == "    return"
    assert heal_text("x = ") == " "
    assert heal_text("    ") == "    "
    assert heal_text("foo(") == ""
    assert heal_text("") == ""
