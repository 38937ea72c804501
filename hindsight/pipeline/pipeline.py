"""One completion, top to bottom: retrieve → gate before → generate → gate after → record.

`Pipeline.complete` is the whole path of one request, from a `CompletionRequest` to the suggestions to
show; it knows nothing of LSP (the server in `hindsight/lsp/` translates to and from it, and the tests
call it directly). The steps, in order:

1. the newest request wins: a request still in flight is told to stop;
2. on the model worker (one thread: llama.cpp is not thread-safe, and the event loop never waits for
   the model): the engine looks up the cross-file context (`retrieval`), asks the gate's first stage
   whether a suggestion here is worth the model's time (`GateRun.before`, through the request's
   `admit`), generates, and asks the gate's second stage whether to show what it wrote (`GateRun.after`);
   alternatives follow when the user asked for a suggestion explicitly;
3. back on the event loop: a document that changed meanwhile makes the suggestion stale (`Stale`); the
   decision (`show`, `empty`, `withheld_stage1`, `withheld_stage2`, `cancelled`, `error`) is recorded with
   the prompt, context, timings and gate features (`recording.request_row`), and the outcome tracker
   starts following what is shown.

The pipeline also owns what the log learns afterwards (accepts, rejects, edits over a suggestion: the
`OutcomeTracker`), the model, adapter and gate being served (loaded by `ModelLoader` and `load_gate`,
reloaded on request or when a new one is promoted, without a restart), the workspace index that feeds
step 2, and the learning loop's runs, started when the user is idle (`learning.py`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hindsight import __version__
from hindsight.collector.store import open_store
from hindsight.collector.tracker import OutcomeTracker
from hindsight.engine.backend import BackendError
from hindsight.engine.engine import Completion, Engine, EngineConfig, LogprobSummary
from hindsight.engine.loader import ModelLoader
from hindsight.engine.prompt import PromptBudget
from hindsight.gating.features import Cursor, UserState
from hindsight.gating.gate import load_gate
from hindsight.gating.policy import Policy, Thresholds
from hindsight.options import Options, parse_options
from hindsight.paths import data_dir
from hindsight.pipeline.learning import Learning, Progress, last_summary
from hindsight.pipeline.recording import NoStore, Outcomes, Recording, request_row
from hindsight.request import CompletionRequest, Snippet
from hindsight.retrieval.live import LiveIndex

log = logging.getLogger("hindsight")

REJECT_REASONS = {"dismissed", "typed_over", "cursor_moved"}


class Stale(Exception):
    """The document changed while the suggestion was being made: it was made for text that is gone."""


@dataclass
class Suggestion:
    id: str
    text: str


@dataclass(frozen=True)
class Lead:
    """The item selected in the client's suggest widget (LSP's `selectedCompletionInfo`): the request's
    document has `text` written from `start` (it replaces what the user typed of it there), and every
    suggestion is drawn from `start`, beginning with `text`, so that it continues the selected item."""
    start: tuple[int, int]  # (line, character) in the real document
    text: str


class Notices:
    """Messages for the user, each told once per key, safe from any thread. `sink(message, level)` shows
    one (the server: window/showMessage); levels are 'error', 'warning' and 'info'. While a reload runs on
    a thread, the warnings and errors it causes are also collected for its answer, told before or not."""

    def __init__(self, sink: Callable[[str, str], None] | None = None):
        self.sink = sink
        self._told: set[str] = set()
        self._collecting = threading.local()

    def tell(self, message: str, level: str = "info", *, key: str | None = None) -> None:
        problems = getattr(self._collecting, "problems", None)
        if problems is not None and level != "info":
            problems.append(message)
        key = key or message
        if key in self._told:
            return
        self._told.add(key)
        log.warning("%s", message)
        if self.sink is not None:
            self.sink(message, level)

    def forget(self, key: str) -> None:
        """`key` may be told again."""
        self._told.discard(key)

    def collect(self, run: Callable[[], None]) -> list[str]:
        """Run `run` on this thread; the problems it causes."""
        self._collecting.problems = problems = []
        try:
            run()
        finally:
            self._collecting.problems = None
        return problems


class GateRun:
    """One request's pass through the gate: stage 1 from the engine's `admit`, stage 2 after generation."""

    def __init__(self, policy: Policy, cursor: Cursor, invoked: bool):
        self.policy, self.cursor, self.invoked = policy, cursor, invoked
        self.decision = None

    def before(self, context: list[Snippet]) -> bool:
        t0 = time.perf_counter()
        self.decision = self.policy.before(self.cursor, [s.score for s in context], invoked=self.invoked)
        self.decision.timings_ms["gate1_ms"] = (time.perf_counter() - t0) * 1000
        return self.decision.proceed

    def after(self, completion: Completion) -> bool:
        if self.decision is None:
            return True
        t0 = time.perf_counter()
        lp = completion.logprobs
        self.policy.after(
            self.decision, self.cursor, completion.text, invoked=self.invoked, mode=completion.mode,
            n_tokens=lp.n_tokens, logprob_mean=lp.mean, logprob_min=lp.min, logprob_first=completion.first_logprob,
            logprob_next=completion.next_logprob, stop=completion.stop,
        )
        self.decision.timings_ms["gate2_ms"] = (time.perf_counter() - t0) * 1000
        return self.decision.proceed


class Pipeline:
    def __init__(self, sink: Callable[[str, str], None] | None = None, progress: Progress | None = None):
        self.notices = Notices(sink)
        self.options = Options()
        self.model_override: str | None = None  # `hindsight serve --model`
        self.loader = ModelLoader(self.options, self.notices)
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hindsight-model")
        self.engine: Engine | None = None
        self.engine_error: str | None = None
        self.store: Any = NoStore()
        self.user = UserState()
        self.tracker = OutcomeTracker(self.store)
        self.policy = Policy(user=self.user)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.live: LiveIndex | None = None
        self.index_stats = None
        self.choices: dict[str, dict[str, str]] = {}  # uri → id → text of the last items returned there
        self.leads: dict[str, int] = {}  # uri → the length of the lead those items begin with
        self.served = 0
        self.session_id = uuid.uuid4().hex[:16]  # this run of the server: one of the user's sessions
        self._inflight: threading.Event | None = None
        self.last_activity = time.monotonic()  # the user's last keystroke or request
        self.learning = self._learning(progress)
        self._ticking: asyncio.Task | None = None

    def _learning(self, progress: Progress | None) -> Learning:
        def last_run() -> dict[str, Any] | None:
            try:
                runs = self.store.learning_runs(last=True) or []
            except Exception:  # a log that cannot say: no last run
                log.debug("could not read the learning runs", exc_info=True)
                return None
            return runs[0] if runs else None

        def tell(message: str, level: str) -> None:
            self.notices.tell(message, level, key=f"learning:{time.time()}")  # each run's end is told

        def reload() -> None:
            if self.loop is not None:
                self.loop.create_task(self.reload())

        return Learning(self.options.learning, db=lambda: self.store.path, last_run=last_run,
                        idle_s=lambda: time.monotonic() - self.last_activity, reload=reload, tell=tell,
                        progress=progress)

    # -- set-up ---------------------------------------------------------------------------------------
    def configure(self, raw_options: Any) -> None:
        """Options from the client (on the event loop); opens the log and loads the gate."""
        self.loop = asyncio.get_running_loop()
        self.options, problems = parse_options(raw_options)
        if self.model_override:
            self.options.model.path = self.model_override
        self.loader = ModelLoader(self.options, self.notices)
        for problem in problems:
            self.notices.tell(f"hindsight: {problem}", "warning", key=problem)
        store, notice = open_store(self.options.database_path)  # corrupt → moved aside; unwritable → default
        if notice:
            self.notices.tell(f"hindsight: {notice}", "error" if store is None else "warning", key="store")
        self.store = Recording(store, self.notices) if store is not None else NoStore()
        self.tracker = OutcomeTracker(Outcomes(self.store, self.user))
        self.load_gate()
        self.learning = self._learning(self.learning.progress)
        if self.options.learning.auto and self.store.path is not None:
            self.learning.look()  # for the status: what the next run waits for
        self._ticking = self.loop.create_task(self._tick())

    async def _tick(self) -> None:
        """The learning loop's tick (`Learning.tick`), for as long as the server runs."""
        while True:
            await asyncio.sleep(self.learning.interval_s())
            try:
                self.learning.tick()
            except Exception:  # a bug must not stop the ticks, nor the server
                log.exception("learning tick failed")

    def load_gate(self) -> None:
        """The promoted acceptance gate (`hindsight train-gate`), if there is one and it loads. One that
        does not load leaves the gate in use, if any, in place (on reload)."""
        g = self.options.gate
        thresholds = Thresholds(g.stage1_threshold, g.threshold, g.exploration, g.shadow)
        gate, problem = (None, None) if not g.enabled else load_gate(data_dir() / "gates")
        if problem and self.policy.gate is not None:
            keeping = f"keeping gate {self.policy.version}"
            self.notices.tell(f"hindsight: {problem}; {keeping}", "warning", key=f"gate:{problem}")
            return
        if problem:
            self.notices.tell(f"hindsight: {problem}; showing every suggestion", "warning", key=f"gate:{problem}")
        self.policy = Policy(gate, thresholds, user=self.user)
        log.info("gate: %s", self.policy.version or "none (every suggestion is shown)")

    def load_engine(self) -> Engine | None:
        """On the model worker. Loads once; a failure is reported once and then served as empty."""
        if self.engine is not None or self.engine_error is not None:
            return self.engine
        try:
            backend = self.loader.load()
        except BackendError as exc:
            return self._engine_failed(exc)
        return self._start(backend)

    def _engine_failed(self, exc: BackendError) -> None:
        self.engine_error = str(exc)
        self.notices.tell(f"hindsight: {exc}; completions are off", "error", key="engine")
        return None

    def _start(self, backend) -> Engine:
        """Serve `backend`: the engine over it, configured from the options."""
        opts = self.options
        c = opts.completion
        config = EngineConfig(
            max_tokens_single=c.max_tokens_single,
            max_tokens_multi=c.max_tokens_multi,
            max_lines=c.max_lines,
            min_token_prob=c.min_token_prob,
            typed_ahead=c.typed_ahead,
            budget=PromptBudget(
                prefix_tokens=opts.context.prefix_tokens,
                context_tokens=opts.context.context_tokens,
                anchor_lines=opts.context.anchor_lines,
            ),
        )
        self.engine = Engine(backend, config, retriever=self._retrieve)
        log.info("model ready: %s", backend.name)
        log.info("adapter: %s; prompts: %s", self.loader.adapter or "none (the base model)", self.engine.profile.name)
        return self.engine

    async def reload(self) -> list[str]:
        """Load the model, adapter and gate again (a new file, or after a failure); one that fails its
        check leaves the last good one serving. The running request, if any, finishes first (the worker
        is a queue of one). Returns this reload's problems, told before or not."""
        return await asyncio.wrap_future(self.worker.submit(self.notices.collect, self._reload))

    def _reload(self) -> None:
        self.load_gate()
        old = self.engine
        if old is None or self.options.backend != "embedded":
            self.engine = self.engine_error = None
            self.loader.forget_loaded()
            self.notices.forget("engine")
            gc.collect()
            self.load_engine()
            return
        files = self.loader.plan_reload(f"still serving {old.backend.name}")
        if files is None:
            return
        self.engine = None
        self.loader.forget_loaded()
        del old
        gc.collect()  # free the old model's memory before the new one is read
        try:
            backend = self.loader.load_files(*files)
        except BackendError as exc:
            self.notices.forget("engine")
            self._engine_failed(exc)
            return
        self._start(backend)

    # -- the workspace index --------------------------------------------------------------------------
    def start_index(self, root: Path, open_text: Callable[[str], str | None], open_uris: list[str],
                    progress: Callable[[int, int], None], finished: Callable[[Any, str | None], None]) -> bool:
        """Index the workspace in the background when cross-file context is on; `finished(stats, error)`
        when done. False when there is nothing to index."""
        if not self.options.context.cross_file:
            return False
        self.live = LiveIndex(root, data_dir() / "index", open_text)
        for uri in open_uris:
            self.live.edited(uri)  # documents opened before the build: their text, not the disk's

        def done(stats, error) -> None:
            if error is not None:
                self.notices.tell(f"hindsight: indexing failed ({error}); no cross-file context", "warning")
            else:
                self.index_stats = stats
                log.info("index: %d files, %d chunks in %.1f s (%d parsed, skipped %s)", stats.files,
                         stats.chunks, stats.seconds, stats.parsed, stats.skipped or "none")
            finished(stats, error)

        self.live.start(progress, done)
        return True

    def _retrieve(self, req: CompletionRequest, window_start: int) -> list[Snippet]:
        return self.live.retrieve(req, window_start) if self.live is not None else []

    # -- one request ----------------------------------------------------------------------------------
    async def complete(self, req: CompletionRequest, *, invoked: bool, received: float,
                       current: Callable[[], bool], lead: Lead | None = None) -> list[Suggestion] | None:
        """The suggestions for `req`: a list (empty when there is nothing to show or the gate withheld
        it), or None (a language that is off, no model, or superseded by a newer request). `current()`
        says whether the document is still as `req` has it (polled on the model worker, so it must be
        cheap and thread-safe); `invoked`: the user asked (alternatives are made), rather than typed.
        Raises `Stale` when the document changed meanwhile; asyncio.CancelledError is recorded and
        passed on. Sets the request's `request_id`, `cancelled` and `admit`. With a `lead`, `req` is the
        document as if the lead were written, and each suggestion's text begins with the lead's."""
        self.last_activity = time.monotonic()
        if req.language not in self.options.languages:
            return None
        if self._inflight is not None:
            self._inflight.set()  # the newest request wins
        cancel = self._inflight = threading.Event()
        req.request_id = uuid.uuid4().hex[:16]
        req.cancelled = lambda: cancel.is_set() or not current()
        n_alternatives = self.options.completion.alternatives if invoked else 0
        gate = GateRun(self.policy, Cursor(req.doc_lines(), req.line, req.character, req.language), invoked)
        req.admit = gate.before
        future = self.worker.submit(self._generate, req, received, n_alternatives, gate)
        try:
            completion, alternatives, error = await asyncio.wrap_future(future)
        except asyncio.CancelledError:  # the client cancelled the request
            cancel.set()
            self._record(req, None, "cancelled", received)
            raise
        if not current():
            self._record(req, completion, "cancelled", received, error=error, gate=gate)
            raise Stale(f"{req.uri} changed while the suggestion was being made")
        if error is not None:
            self._record(req, None, "error", received, error=error)
            return None
        if completion is None:
            return None
        if completion.cancelled:
            self._record(req, completion, "cancelled", received, gate=gate)
            return None
        if completion.withheld:
            decision = "withheld_stage1"
        elif gate.decision is not None and not gate.decision.proceed:
            decision = "withheld_stage2"
        else:
            decision = "show" if completion.text else "empty"
        self.tracker.new_request(req.uri, completion.parent_id)
        self.choices.pop(req.uri, None)
        self._record(req, completion, decision, received, gate=gate)
        self.served += 1
        if decision != "show":
            return []
        head = lead.text if lead else ""
        start = lead.start if lead else (req.line, req.character)
        self.tracker.shown(req.uri, req.request_id, start, head + completion.text, lead=head)
        choices = {req.request_id: head + completion.text}
        for alt in alternatives:
            alt_req = dataclasses.replace(req, request_id=uuid.uuid4().hex[:16])
            self._record(alt_req, alt, "alternative", received, alternative_of=req.request_id)
            choices[alt_req.request_id] = head + alt.text
        self.choices[req.uri] = choices
        self.leads[req.uri] = len(head)
        return [Suggestion(id, text) for id, text in choices.items()]

    def _generate(self, req: CompletionRequest, received: float, n_alternatives: int, gate: GateRun):
        """On the model worker: (the completion, its alternatives, an error message). The gate's stage 1
        runs inside the engine (once the context is known), stage 2 here."""
        queued = (time.perf_counter() - received) * 1000
        if req.cancelled():
            return Completion("", "single", "model", None, LogprobSummary(), {"queue_ms": queued}, cancelled=True), [], None
        engine = self.load_engine()
        if engine is None:
            return None, [], None
        try:
            completion = engine.complete(req)
            if completion.source == "model" and completion.text and not completion.cancelled:
                if not gate.after(completion):
                    engine.cache.drop(req.uri)  # typing on must not bring the withheld suggestion back
            alternatives = engine.alternatives(req, completion, n_alternatives) if n_alternatives and completion.text else []
        except BackendError as exc:
            self.notices.tell(f"hindsight: {exc}", "error", key=f"backend:{exc}")
            return None, [], str(exc)
        except Exception as exc:  # a bug must not take the server down
            log.exception("completion failed")
            return None, [], f"{type(exc).__name__}: {exc}"
        finally:
            for limit in getattr(engine.backend, "limits", ()):  # what a model server cannot do, said once
                self.notices.tell(f"hindsight: {limit}", "warning", key=f"limit:{limit}")
        completion.timings_ms["queue_ms"] = queued
        return completion, alternatives, None

    def _record(self, req: CompletionRequest, c: Completion | None, decision: str, received: float, *,
                error: str | None = None, alternative_of: str | None = None, gate: GateRun | None = None) -> None:
        engine = self.engine
        row = request_row(
            req, c, decision, latency_ms=(time.perf_counter() - received) * 1000, session_id=self.session_id,
            model=engine.backend.name if engine is not None else None, backend=self.options.backend,
            error=error, alternative_of=alternative_of, gate=gate.decision if gate is not None else None,
            gate_version=self.policy.version,
        )
        try:
            self.store.insert_request(row)
        except Exception:
            log.exception("could not record request %s", req.request_id)

    # -- what became of a suggestion ----------------------------------------------------------------
    def document_changed(self, uri: str, start, end, text: str, lines: Callable[[], list[str]]) -> None:
        """An edit from `start` to `end` (line, character) of the text as it stood, replaced by `text`;
        `lines()` gives the document as it stands now (split only when a suggestion there is followed)."""
        self.last_activity = time.monotonic()
        typed = len(text) <= 2 and start[0] == end[0] and end[1] - start[1] <= 1  # a key, not a paste
        if typed and (text or end != start):
            self.user.keystroke()
        if self.live is not None:
            self.live.edited(uri)
        if self.tracker.tracks(uri):  # most keystrokes: nothing to follow, no need to split the document
            self.tracker.changed(uri, start, end, text, lines())

    def document_replaced(self, uri: str, lines: list[str]) -> None:
        if self.live is not None:
            self.live.edited(uri)
        self.tracker.replaced(uri, lines)

    def document_opened(self, uri: str, text: str) -> None:
        if self.live is not None:
            self.live.opened(uri, text)

    def document_closed(self, uri: str, lines: list[str]) -> None:
        if self.live is not None:
            self.live.on_disk(uri)
        self.tracker.closed(uri, lines)

    def file_on_disk(self, uri: str) -> None:
        """A file saved, or changed on disk: the index follows it."""
        if self.live is not None:
            self.live.on_disk(uri)

    def event(self, kind: str, request_id: str | None, payload: dict) -> None:
        try:
            self.store.add_event(kind, request_id, payload)
        except Exception:
            log.exception("could not record event %s", kind)

    def shown(self, request_id: str) -> None:
        """The client displayed a suggestion (perhaps one the user cycled to)."""
        self.event("show", request_id, {"id": request_id})
        self.store.mark_shown(request_id)
        for uri, choices in self.choices.items():
            if request_id in choices:
                self.tracker.switched(uri, request_id, choices[request_id])
                return

    def accepted(self, request_id: str, lines: Callable[[str], list[str] | None]) -> None:
        """The client accepted a suggestion; what stands there is compared with it later (`lines(uri)`:
        the document then, None once it is closed)."""
        self.event("accept", request_id, {"id": request_id})
        uri = self.tracker.accepted_by_client(request_id)
        if uri is None or self.loop is None:
            return
        delays = self.options.persistence_delays_s[:2]
        for i, (delay, slot) in enumerate(zip(delays, ("30s", "120s"))):
            last = i == len(delays) - 1
            self.loop.call_later(delay, self._check_persistence, uri, request_id, slot, last, lines)

    def _check_persistence(self, uri: str, request_id: str, slot: str, last: bool, lines) -> None:
        try:
            self.tracker.check_persistence(uri, request_id, slot, lines(uri), last)
        except Exception:
            log.exception("persistence check failed")

    def partially_accepted(self, request_id: str, length: int) -> None:
        """`length`: how much of the item's text the user took; the log counts it in the model's
        completion, after the lead (a partial accept within the lead took the selected item only)."""
        self.event("partial_accept", request_id, {"id": request_id, "acceptedLength": length})
        lead = next((self.leads.get(uri, 0) for uri, choices in self.choices.items() if request_id in choices), 0)
        if length > lead:
            self.tracker.partially_accepted(request_id, length - lead)

    def rejected(self, request_id: str, reason: str | None) -> None:
        reason = reason if reason in REJECT_REASONS else "dismissed"
        self.event("reject", request_id, {"id": request_id, "reason": reason})
        self.tracker.rejected_by_client(request_id, reason)

    # -- status and shutdown --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        try:
            stats = self.store.stats()
        except Exception as exc:
            stats = {"error": str(exc)}
        last = self.learning.last_run()
        engine = self.engine
        return {
            "version": __version__,
            "backend": self.options.backend,
            "model": engine.backend.name if engine else self.options.model.path or self.options.model.name or "embedded",
            "modelLoaded": engine is not None,
            "modelError": self.engine_error,
            "adapter": self.loader.adapter,
            "gate": self.policy.version,
            "promptFormat": engine.profile.name if engine else None,
            "database": str(self.store.path) if self.store.path else None,
            "served": self.served,
            "index": None
            if self.index_stats is None
            else {"files": self.index_stats.files, "chunks": self.index_stats.chunks, "seconds": self.index_stats.seconds},
            "stats": stats,
            "lastLearning": last_summary(last) if last else None,
            "nextLearning": self.learning.next(),
        }

    def shutdown(self) -> None:
        if self._ticking is not None:
            self._ticking.cancel()  # a learning run under way goes on, on its own, and records itself
        if self._inflight is not None:
            self._inflight.set()
        if self.live is not None:
            self.live.close()
        try:
            self.store.expire_open()
        except Exception:
            log.exception("could not expire open suggestions")
