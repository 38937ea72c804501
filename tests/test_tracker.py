"""Outcome inference from edits alone: typed over, superseded, continued, what was written instead,
persistence of accepted text. A real Store on a temporary file."""

from __future__ import annotations

import pytest

from hindsight.collector.store import Store
from hindsight.collector.tracker import OutcomeTracker, end_of, shift, similarity, text_between

URI = "file:///w/a.py"


class Doc:
    """A document that applies edits and reports them to the tracker as the server does."""

    def __init__(self, tracker: OutcomeTracker, text: str):
        self.tracker = tracker
        self.lines = text.split("\n")

    def edit(self, start, end, text):
        full = "\n".join(self.lines)
        offset = lambda p: sum(len(l) + 1 for l in self.lines[: p[0]]) + p[1]
        full = full[: offset(start)] + text + full[offset(end) :]
        self.lines = full.split("\n")
        self.tracker.changed(URI, start, end, text, self.lines)

    def type(self, pos, text):
        self.edit(pos, pos, text)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "t.db")
    yield s
    s.close()


def suggestion(store: Store, tracker: OutcomeTracker, pos, text: str, rid: str) -> str:
    store.insert_request({"id": rid, "uri": URI, "decision": "show", "completion": text})
    tracker.new_request(URI, None)
    tracker.shown(URI, rid, pos, text)
    return rid


def test_positions_shift_with_edits():
    assert end_of((2, 3), "ab") == (2, 5)
    assert end_of((2, 3), "ab\ncd") == (3, 2)
    # Insert a line above: the position moves down.
    assert shift((5, 4), (1, 0), (1, 0), (2, 0)) == (6, 4)
    # Insert on the same line before it: moves right.
    assert shift((5, 4), (5, 0), (5, 0), (5, 3)) == (5, 7)
    # Edits after it: no change.
    assert shift((5, 4), (5, 9), (5, 9), (5, 12)) == (5, 4)
    assert text_between(["abc", "def"], (0, 1), (1, 2)) == "bc\nde"
    assert similarity("abc", "abc") == 1.0 and similarity("abc", "xyz") == 0.0


def test_typing_along_keeps_it_then_typing_over_rejects(store):
    t = OutcomeTracker(store)
    doc = Doc(t, "x = \ny = 2")
    rid = suggestion(store, t, (0, 4), "compute(1)", "r1")
    doc.type((0, 4), "c")
    doc.type((0, 5), "o")
    assert store.get_request(rid)["outcome"] is None
    doc.type((0, 6), "z")
    assert store.get_request(rid)["outcome"] == "rejected"
    assert store.get_request(rid)["outcome_reason"] == "typed_over"


def test_an_edit_elsewhere_rejects(store):
    t = OutcomeTracker(store)
    doc = Doc(t, "x = \ny = 2")
    rid = suggestion(store, t, (0, 4), "compute(1)", "r1")
    doc.type((1, 5), "0")
    assert store.get_request(rid)["outcome_reason"] == "typed_over"


def test_superseded_and_continued(store):
    t = OutcomeTracker(store)
    a = suggestion(store, t, (0, 4), "one", "a")
    store.insert_request({"id": "b", "uri": URI, "decision": "show"})
    t.new_request(URI, None)
    assert store.get_request(a)["outcome_reason"] == "superseded"
    t.shown(URI, "b", (0, 4), "two")
    t.new_request(URI, "b")  # served from the typed-ahead cache: the suggestion goes on
    assert store.get_request("b")["outcome"] == "continued"


def test_what_the_user_wrote_instead_is_read_when_they_leave_the_line(store):
    t = OutcomeTracker(store)
    doc = Doc(t, "def f():\n    return \n\nz = 1")
    rid = suggestion(store, t, (1, 11), "None", "r1")
    t.rejected_by_client(rid, "dismissed")
    doc.type((1, 11), "4")
    doc.type((1, 12), "2")
    assert store.get_request(rid)["actual_text"] is None
    doc.type((0, 0), "# note\n")  # a line above: the tracked line moves down, and the user left it
    assert store.get_request(rid)["actual_text"] == "42"


def test_what_was_written_after_a_selected_item_is_read_after_it(store):
    """A suggestion that continued the client's selected item ("return", over the typed "re"): the log's
    prompt ends with the item, so what the user wrote is kept from after it, and only when they wrote it."""
    t = OutcomeTracker(store)
    doc = Doc(t, "def f():\n    re\n\nz = 1")
    for rid, typed in (("r1", "turn 42"), ("r2", "sult = 1")):
        store.insert_request({"id": rid, "uri": URI, "decision": "show", "completion": " None"})
        t.new_request(URI, None)
        t.shown(URI, rid, (1, 4), "return None", lead="return")
        t.rejected_by_client(rid, "dismissed")
        doc.type((1, 6), typed)
        doc.type((3, 0), "\n")  # the user left the line
        doc.edit((1, 6), (1, 6 + len(typed)), "")
    assert store.get_request("r1")["actual_text"] == " 42"
    assert store.get_request("r2")["actual_text"] is None


def test_accepted_text_persistence(store):
    t = OutcomeTracker(store)
    doc = Doc(t, "a = \nb = 2")
    rid = suggestion(store, t, (0, 4), "make(1)", "r1")
    doc.type((0, 4), "make(1)")
    assert t.accepted_by_client(rid) == URI
    assert store.get_request(rid)["outcome"] == "accepted"
    doc.type((0, 0), "import x\n")  # shifts the accepted text down a line
    assert t.check_persistence(URI, rid, "30s", doc.lines, last=False) == pytest.approx(1.0)
    doc.edit((1, 9), (1, 10), "2")  # make(1) → make(2)
    score = t.check_persistence(URI, rid, "120s", doc.lines, last=True)
    assert 0.5 < score < 1.0
    row = store.get_request(rid)
    assert row["persist_30s"] == pytest.approx(1.0) and row["persist_120s"] == pytest.approx(score)


def test_typing_the_whole_suggestion_counts_as_accepted(store):
    t = OutcomeTracker(store)
    doc = Doc(t, "a = \n")
    rid = suggestion(store, t, (0, 4), "1", "r1")
    doc.type((0, 4), "1")
    doc.type((0, 5), " + 2")
    assert store.get_request(rid)["outcome"] == "accepted"


def test_closing_the_document_settles_everything(store):
    t = OutcomeTracker(store)
    Doc(t, "a = \n")
    rid = suggestion(store, t, (0, 4), "1", "r1")
    t.closed(URI, ["a = 7", ""])
    row = store.get_request(rid)
    assert row["outcome"] == "rejected" and row["outcome_reason"] == "cursor_moved"
    assert row["actual_text"] == "7"


def test_cycling_rejects_the_alternatives_passed_only_when_the_last_one_is_settled(store):
    t = OutcomeTracker(store)
    doc = Doc(t, "x = \n")
    first = suggestion(store, t, (0, 4), "1", "a")
    for rid, text in (("b", "2"), ("c", "3")):
        store.insert_request({"id": rid, "uri": URI, "decision": "alternative", "alternative_of": "a", "completion": text})
    t.switched(URI, "b", "2")
    t.switched(URI, "a", "1")  # cycled back: "a" is on screen again, "b" was passed
    t.switched(URI, "b", "2")
    assert store.get_request("a")["outcome"] is None  # nothing settled while cycling
    doc.type((0, 4), "2 ")  # types the second one out, and on
    assert store.get_request("b")["outcome"] == "accepted"
    assert (store.get_request(first)["outcome"], store.get_request(first)["outcome_reason"]) == ("rejected", "cycled")
    assert store.get_request("c")["outcome"] is None  # never shown
    assert store.stats()["requests"] == 1 and store.stats()["shown"] == 1  # "b" was never marked shown here
