"""What the pipeline writes to the log, and how a write that fails is survived.

`request_row` is the one place that says what a request's row holds. The store is wrapped twice: by
`Recording`, so that a write that fails (a full disk, a database locked for longer than the busy timeout)
is dropped and the user told once, and by `Outcomes`, so that every outcome recorded also reaches the
user's recent state (the gate's features).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from hindsight.collector.store import FULL, Store, StoreError
from hindsight.engine.engine import Completion
from hindsight.gating.features import UserState
from hindsight.gating.policy import Decision
from hindsight.request import CompletionRequest

log = logging.getLogger(__name__)


class NoStore:
    """Stands in when the database cannot be opened: the server still completes, nothing is recorded."""

    path = None

    def __getattr__(self, name):
        return lambda *a, **k: None

    def set_outcome(self, *a, **k):
        return True


class Recording:
    """The store as the pipeline writes to it. A write that fails is dropped, the user is told once, and
    the server goes on; the next request or event that is recorded says so (an update that matches
    nothing writes nothing, and proves nothing), and a later failure is told again. Reads pass through
    unchanged."""

    APPENDS = frozenset({"insert_request", "add_event"})  # always write a row: a success means there is room

    def __init__(self, store: Store, notices):
        self.store, self.notices = store, notices
        self.path = store.path
        self._failing = False
        self._lock = threading.Lock()

    def __getattr__(self, name):
        attr = getattr(self.store, name)
        if name not in Store.WRITES:
            return attr

        def write(*args, **kwargs):
            try:
                result = attr(*args, **kwargs)
            except StoreError as exc:
                self._failed(exc)
                return name == "set_outcome" or None  # as NoStore: the outcome still counts for the gate
            if self._failing and name in self.APPENDS:
                self._recovered()
            return result

        return write

    def _failed(self, exc: StoreError) -> None:
        with self._lock:
            self._failing = True
        self.notices.forget("store-recovered")
        if exc.kind == FULL:
            message = f"hindsight: disk full: not recording until there is space ({self.store.path})"
        else:
            message = f"hindsight: not recording: {exc}"
        self.notices.tell(message, "error", key="store-write")

    def _recovered(self) -> None:
        with self._lock:
            if not self._failing:
                return
            self._failing = False
        self.notices.forget("store-write")
        self.notices.tell(f"hindsight: recording again ({self.store.path})", "info", key="store-recovered")


class Outcomes:
    """The store as the outcome tracker sees it: each outcome that is recorded also goes to the user's
    recent state (the gate's features)."""

    def __init__(self, store, user: UserState):
        self.store, self.user = store, user

    def __getattr__(self, name):
        return getattr(self.store, name)

    def set_outcome(self, id: str, outcome: str, **kwargs) -> bool:
        changed = self.store.set_outcome(id, outcome, **kwargs)
        if changed and outcome in ("accepted", "partial", "rejected"):
            self.user.outcome(outcome)
        return changed


def request_row(
    req: CompletionRequest, c: Completion | None, decision: str, *, latency_ms: float, session_id: str,
    model: str | None, backend: str | None, error: str | None = None, alternative_of: str | None = None,
    gate: Decision | None = None, gate_version: str | None = None,
) -> dict[str, Any]:
    """The log's row for one request (or one alternative): where, what was decided, what the model was
    asked and wrote, its log-probs, timings and the gate's features and probabilities."""
    if gate is not None and c is not None:
        c.timings_ms.update(gate.timings_ms)
    row: dict[str, Any] = {
        "id": req.request_id,
        "session_id": session_id,
        "alternative_of": alternative_of,
        "uri": req.uri,
        "language": req.language,
        "line": req.line,
        "character": req.character,
        "decision": decision,
        "latency_ms": latency_ms,
        "error": error,
    }
    if model is not None:
        row["model"] = model
        row["backend"] = backend
    if c is not None:
        row.update(
            completion=c.text,
            mode=c.mode,
            source=c.source,
            parent_id=c.parent_id,
            timings_json=dict(c.timings_ms, server_ms=latency_ms),
            prompt_tokens=c.prompt_tokens,
            reused_tokens=c.reused_tokens,
            n_tokens=c.logprobs.n_tokens,
            logprob_sum=c.logprobs.sum,
            logprob_mean=c.logprobs.mean,
            logprob_min=c.logprobs.min,
        )
        if c.prompt is not None:
            row.update(
                prompt=c.prompt.text,
                prefix=c.prompt.prefix,
                suffix=c.prompt.suffix,
                context_json=[
                    {"source": s.source, "origin": s.origin, "score": s.score, "text": s.text}
                    for s in c.prompt.context
                ],
            )
    if gate is not None:
        row.update(gate.record(), gate_version=gate_version)
    return row
