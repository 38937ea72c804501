"""The gate's decisions for the server: stage 1 before generation (no model call below its threshold),
stage 2 after (the suggestion is not shown below its threshold), with exploration.

Exploration keeps the training data unbiased by the gate itself: a withheld suggestion is shown anyway
with probability `exploration`, and each shown suggestion logs its propensity (the probability that the
policy showed it: the product over the two stages of 1 where the gate passed it and `exploration` where
it did not). Training weighs each row by 1 / propensity. Without a trained gate every suggestion is
shown (propensity 1) and the features are still logged: they are the first gate's training data.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Sequence

from hindsight.gating import features as F


@dataclass
class Thresholds:
    stage1: float | None = None  # None: the trained gate's
    stage2: float | None = None
    exploration: float = 0.05
    shadow: bool = False  # compute and log the gate's probabilities, but show every suggestion


@dataclass
class Decision:
    features: dict[str, float]
    p1: float | None = None
    p2: float | None = None
    proceed: bool = True  # stage 1: call the model; after stage 2: show the suggestion
    propensity: float = 1.0
    explored: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict:
        """The request row's gate columns."""
        return {
            "features_json": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.features.items()},
            "gate_p1": self.p1,
            "gate_p2": self.p2,
            "propensity": self.propensity,
            "explored": int(self.explored),
        }


class Policy:
    def __init__(self, gate=None, thresholds: Thresholds | None = None, *, user: F.UserState | None = None, seed: int | None = None):
        self.gate = gate  # hindsight.gating.gate.Gate, or None: ungated
        self.thresholds = thresholds or Thresholds()
        self.user = user or F.UserState()
        self.rng = random.Random(seed)

    @property
    def version(self) -> str | None:
        return self.gate.version if self.gate is not None else None

    def _threshold(self, stage: int) -> float:
        override = self.thresholds.stage1 if stage == 1 else self.thresholds.stage2
        if override is not None:
            return override
        return self.gate.thresholds[stage - 1]

    def _pass(self, decision: Decision, p: float, stage: int) -> bool:
        """Whether to go on at `stage`, given the gate's `p`; explores below the threshold."""
        if p >= self._threshold(stage):
            return True
        if self.rng.random() < self.thresholds.exploration:
            decision.explored = True
            decision.propensity *= self.thresholds.exploration
            return True
        return False

    def before(self, cursor: F.Cursor, context_scores: Sequence[float] = (), *, invoked: bool = False) -> Decision:
        """Stage 1. An explicit request (the user asked) is never withheld, only logged."""
        decision = Decision(F.stage1(cursor, self.user.snapshot(), context_scores=context_scores, invoked=invoked))
        if self.gate is not None:
            decision.p1 = self.gate.p1(F.vector(decision.features, self.gate.names1))
            if not invoked and not self.thresholds.shadow:
                decision.proceed = self._pass(decision, decision.p1, 1)
        return decision

    def after(self, decision: Decision, cursor: F.Cursor, completion: str, *, invoked: bool = False, **facts) -> Decision:
        """Stage 2, on a generated completion (`facts`: stage2's keyword arguments): `decision.proceed`
        says whether to show it."""
        decision.features = F.stage2(decision.features, cursor, completion, **facts)
        if self.gate is not None:
            decision.p2 = self.gate.p2(F.vector(decision.features, self.gate.names2))
            if not invoked and not self.thresholds.shadow:
                decision.proceed = self._pass(decision, decision.p2, 2)
        return decision
