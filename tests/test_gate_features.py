"""hindsight.gating.features: the gate's features are deterministic functions of the document, the cursor, the
completion and the user's recent state (time comes from an injected clock)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hindsight.gating.features import STAGE1, STAGE2, Cursor, UserState, stage1, stage2, vector
from hindsight.gating.policy import Policy, Thresholds

DOC = """import math


class Circle:
    def __init__(self, radius):
        self.radius = radius  # the radius, in meters

    def area(self):
        label = "circle of radius"
        return math.pi * self.radius ** 2
""".split("\n")


def user(keystrokes=(), outcomes=(), now=100.0) -> dict:
    state = UserState(clock=lambda: now)
    for t in keystrokes:
        state.keystroke(t)
    for kind, t in outcomes:
        state.outcome(kind, t)
    return state.snapshot(now)


def test_stage1_is_deterministic_and_named():
    cursor = Cursor(DOC, 9, 15, "python")  # `        return |math.pi`
    snap = user([1.0, 1.2, 1.4, 1.6], [("accepted", 50.0)])
    a = stage1(cursor, snap, context_scores=[2.0, 5.5])
    b = stage1(Cursor(list(DOC), 9, 15, "python"), dict(snap), context_scores=[2.0, 5.5])
    assert a == b and set(a) == set(STAGE1)
    assert a["lang_python"] == 1.0 and sum(a[f"lang_{x}"] for x in ("go", "c", "java")) == 0
    assert a["line_len"] == 15 and a["line_len_trimmed"] == 6 and a["line_indent"] == 8
    assert a["ws_after_cursor"] == 0.0 and a["last_char"] == ord(" ") and a["last_char_space"] == 1.0
    assert a["context_best_score"] == 5.5 and a["context_n"] == 2
    assert a["prev_accepted"] == 1.0 and a["prev_none"] == 0.0
    assert 0 < a["cursor_rel"] < 1


def test_comment_and_string_at_the_cursor():
    in_comment = stage1(Cursor(DOC, 5, 40, "python"), user())
    in_string = stage1(Cursor(DOC, 8, 20, "python"), user())
    after_string = stage1(Cursor(DOC, 8, len(DOC[8]), "python"), user())
    code = stage1(Cursor(DOC, 9, 15, "python"), user())
    assert (in_comment["in_comment"], in_comment["in_string"]) == (1.0, 0.0)
    assert (in_string["in_comment"], in_string["in_string"]) == (0.0, 1.0)
    assert after_string["in_string"] == 0.0 and code["in_comment"] == code["in_string"] == 0.0
    js = Cursor(["const s = `a ${b} c`; // note", ""], 0, 13, "javascript")
    assert stage1(js, user())["in_string"] == 1.0


def test_times_are_in_the_users_own_keystrokes():
    # The same rhythm at two speeds gives the same features: a gate trained on the fast simulated
    # developer reads a person's pauses the same way.
    slow = user([i * 0.2 for i in range(20)], [("rejected", 3.0)], now=3.8 + 0.6)
    fast = user([i * 0.02 for i in range(20)], [("rejected", 0.3)], now=0.38 + 0.06)
    for name in ("log_typing_pace", "log_since_keystroke", "log_since_outcome"):
        assert slow[name] == pytest.approx(fast[name], abs=1e-6)
    assert slow["log_since_keystroke"] == pytest.approx(math.log1p(0.6 / 0.2))
    empty = user()
    assert math.isnan(empty["log_since_outcome"]) and empty["prev_none"] == 1.0
    assert empty["recent_accept_rate"] == 0.5  # the prior, with no outcomes yet


def test_recent_acceptance_rate_counts_the_last_outcomes():
    snap = user(outcomes=[("accepted", 1), ("partial", 2), ("rejected", 3), ("rejected", 4)])
    assert snap["recent_accept_rate"] == pytest.approx((2 + 1) / (4 + 2))
    assert snap["prev_rejected"] == 1.0 and snap["recent_n"] == 4


def test_stage2_completion_features():
    lines = DOC[:9] + ["        return ", "", "    def perimeter(self):", "        return 2 * math.pi * self.radius"]
    cursor = Cursor(lines, 9, 15, "python")
    first = stage1(cursor, user())
    good = stage2(first, cursor, "math.pi * self.radius ** 2", mode="single", n_tokens=9, logprob_mean=-0.2, logprob_min=-1.0)
    assert set(good) == set(STAGE2)
    assert good["parses"] == 1.0 and good["first_line_in_document"] == 0.0 and good["n_lines"] == 1
    again = stage2(first, cursor, "2 * math.pi * self.radius", mode="single", n_tokens=9, logprob_mean=-0.2, logprob_min=-1.0)
    assert again["first_line_in_document"] == 1.0 and again["repeats_document"] == 0.0  # "return 2 * ..." is there
    broken = stage2(first, cursor, "math.pi * (self.radius", mode="single", n_tokens=6, logprob_mean=-1.5, logprob_min=-4.0)
    assert broken["parses"] == 0.0 and broken["first_line_in_document"] == 0.0
    tail = Cursor(["x = compute(", "    a, b)"], 0, 12, "python")
    overlap = stage2(stage1(tail, user()), tail, "a, b)", mode="single", n_tokens=3, logprob_mean=None, logprob_min=None)
    assert overlap["suffix_overlap"] == 1.0 and math.isnan(overlap["lp_mean"])
    assert stage2(first, cursor, "   ", mode="single", n_tokens=1, logprob_mean=-1, logprob_min=-1)["blank"] == 1.0


def test_vector_keeps_the_order_and_maps_missing_to_nan():
    row = vector({"line_len": 3.0, "lp_mean": None}, ["lp_mean", "line_len", "absent"])
    assert row.dtype == np.float32 and row.shape == (1, 3)
    assert math.isnan(row[0, 0]) and row[0, 1] == 3.0 and math.isnan(row[0, 2])


def test_ungated_policy_shows_everything_and_logs_features():
    policy = Policy(None, Thresholds(), user=UserState(clock=lambda: 5.0))
    decision = policy.before(Cursor(DOC, 9, 15, "python"))
    assert decision.proceed and decision.p1 is None and decision.propensity == 1.0
    policy.after(decision, Cursor(DOC, 9, 15, "python"), "math.pi", mode="single", n_tokens=2, logprob_mean=-0.1, logprob_min=-0.2)
    record = decision.record()
    assert record["gate_p2"] is None and set(record["features_json"]) == set(STAGE2)
    assert record["features_json"]["log_since_outcome"] is None  # NaN is stored as null
