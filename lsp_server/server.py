"""The language server: protocol only. Documents, requests, cancellation, commands, notifications.

One `HindsightServer` owns the state. Handlers translate LSP types into plain calls into `engine/` and
`collector/`; generation runs on a single model worker thread (llama.cpp is not thread-safe), never on
the event loop. A part that fails (model, database) is reported once and the server goes on without it.
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
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol, lsp_method
from pygls.uris import to_fs_path

from collector.store import Store, StoreError
from collector.tracker import OutcomeTracker
from engine.backend import BackendError
from engine.engine import Completion, CompletionRequest, Engine, EngineConfig, LogprobSummary
from engine.prompt import PromptBudget
from engine.syntax import SOURCE_EXTENSIONS
from engine.syntax import normalize_language
from gating.features import Cursor, UserState
from gating.policy import Decision, Policy, Thresholds

from . import __version__
from .options import Options, parse_options

log = logging.getLogger("hindsight")

ACCEPT = "hindsight.accept"
STATUS = "hindsight.status"
RELOAD = "hindsight.reload"
DID_SHOW = "hindsight/didShow"
DID_PARTIALLY_ACCEPT = "hindsight/didPartiallyAccept"
DID_REJECT = "hindsight/didReject"
REJECT_REASONS = {"dismissed", "typed_over", "cursor_moved"}

_UNREADABLE = object()  # a message that failed to deserialize and was already answered


class HindsightProtocol(LanguageServerProtocol):
    def structure_message(self, data: dict[str, Any]):
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            # pygls drops a request whose params fail to deserialize, and the client waits forever.
            if isinstance(data, dict) and "id" in data and "method" in data:
                cause = str(exc.__cause__ or exc).splitlines()[0]
                error = JsonRpcInvalidParams(f"invalid params for {data['method']}: {cause}")
                self._send_response(data["id"], None, error.to_response_error())
            return _UNREADABLE

    def handle_message(self, message):
        if message is _UNREADABLE:
            return None
        return super().handle_message(message)

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams):
        """Apply each change, and tell the server where it was in the document as it stood before."""
        uri = params.text_document.uri
        doc = self.workspace.get_text_document(uri)
        for change in params.content_changes:
            if isinstance(change, types.TextDocumentContentChangePartial):
                r = doc.range_from_client_units(change.range)
                start, end = (r.start.line, r.start.character), (r.end.line, r.end.character)
                self.workspace.update_text_document(params.text_document, change)
                self._server.document_changed(uri, start, end, change.text)
            else:
                self.workspace.update_text_document(params.text_document, change)
                self._server.document_replaced(uri)
        yield from ()

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams):
        """Settle the document's outcomes with its last text, then forget it."""
        uri = params.text_document.uri
        doc = self.workspace.text_documents.get(uri)
        self._server.document_closed(uri, doc.source.split("\n") if doc else [])
        self.workspace.remove_text_document(uri)
        yield from ()


class _NoStore:
    """Stands in when the database cannot be opened: the server still completes, nothing is recorded."""

    def __getattr__(self, name):
        return lambda *a, **k: None

    def set_outcome(self, *a, **k):
        return True


class _Outcomes:
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


class _GateRun:
    """One request's pass through the gate: stage 1 from the engine's `admit`, stage 2 after generation."""

    def __init__(self, policy: Policy, cursor: Cursor, invoked: bool):
        self.policy, self.cursor, self.invoked = policy, cursor, invoked
        self.decision: Decision | None = None

    def before(self, context) -> bool:
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


class HindsightServer(LanguageServer):
    def __init__(self):
        super().__init__(
            "hindsight",
            __version__,
            protocol_cls=HindsightProtocol,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
        )
        self.options = Options()
        self.model_override: str | None = None  # `hindsight serve --model`
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hindsight-model")
        self.engine: Engine | None = None
        self.engine_error: str | None = None
        self.store: Any = _NoStore()
        self.tracker = OutcomeTracker(self.store)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._told: set[str] = set()
        self._inflight: threading.Event | None = None
        self.live = None  # retrieval.live.LiveIndex once the workspace index is started
        self.index_stats = None
        self.choices: dict[str, dict[str, str]] = {}  # uri → id → text of the last items returned there
        self.served = 0
        self.session_id = uuid.uuid4().hex[:16]  # this run of the server: one of the user's sessions
        self.user = UserState()
        self.policy = Policy(user=self.user)
        self.adapter: str | None = None  # the LoRA adapter the model runs with (its version name)
        self._adapter_checks: dict[tuple[str, int], str | None] = {}  # (path, mtime_ns) → check_adapter's verdict

    # -- set-up ---------------------------------------------------------------------------------------
    def configure(self, raw_options: Any) -> None:
        self.loop = asyncio.get_running_loop()
        self.options, problems = parse_options(raw_options)
        if self.model_override:
            self.options.model = self.model_override
        for problem in problems:
            self.tell(f"hindsight: {problem}", types.MessageType.Warning, key=problem)
        try:
            self.store = Store(self.options.database_path)
        except (StoreError, OSError) as exc:
            self.tell(f"hindsight: not recording outcomes: {exc}", types.MessageType.Error, key="store")
            self.store = _NoStore()
        self.tracker = OutcomeTracker(_Outcomes(self.store, self.user))
        self.load_gate()

    def load_gate(self) -> None:
        """The promoted acceptance gate (`hindsight train-gate`), if there is one and it loads."""
        from collector.paths import data_dir
        from gating.gate import load_gate

        g = self.options.gate
        thresholds = Thresholds(g.stage1_threshold, g.threshold, g.exploration, g.shadow)
        gate, problem = (None, None) if not g.enabled else load_gate(data_dir() / "gates")
        if problem:
            self.tell(f"hindsight: {problem}; showing every suggestion", types.MessageType.Warning, key=f"gate:{problem}")
        self.policy = Policy(gate, thresholds, user=self.user)
        log.info("gate: %s", self.policy.version or "none (every suggestion is shown)")

    def load_engine(self) -> Engine | None:
        """On the model worker. Loads once; a failure is reported once and then served as empty."""
        if self.engine is not None or self.engine_error is not None:
            return self.engine
        opts = self.options
        try:
            if opts.backend == "http":
                from engine.http_backend import HttpBackend

                backend = HttpBackend(opts.base_url, model=opts.model, api_key=opts.api_key)
            else:
                from engine.llama_backend import LlamaBackend, adapter_name
                from engine.model import resolve_model

                model_path = resolve_model(opts.model)
                adapter = self.find_adapter(model_path)
                kwargs = dict(n_ctx=opts.n_ctx, n_threads=opts.n_threads, kv_reuse=opts.completion.kv_reuse)
                try:
                    backend = LlamaBackend(model_path, lora_path=adapter, **kwargs)
                except BackendError as exc:
                    if adapter is None:
                        raise
                    self._adapter_problem(f"{exc}")
                    backend = LlamaBackend(model_path, **kwargs)
                self.adapter = adapter_name(backend.lora_path) if backend.lora_path else None
        except BackendError as exc:
            self.engine_error = str(exc)
            self.tell(f"hindsight: {exc}; completions are off", types.MessageType.Error, key="engine")
            return None
        from fim.format import FORMAT, declared_format

        c = opts.completion
        config = EngineConfig(
            fim=declared_format(getattr(backend, "lora_path", None)) == FORMAT,
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
        log.info("adapter: %s%s", self.adapter or "none (the base model)", " (fill-in-the-middle prompts)" if config.fim else "")
        return self.engine

    def find_adapter(self, model_path: Path) -> Path | None:
        """The promoted LoRA adapter for this model file, if the `adapter` option is on and it passes
        `check_adapter` (a test load in a child process, once per file and mtime); else None, and the
        user is told once why not."""
        if not self.options.adapter:
            return None
        from refresh.registry import RegistryError, adapters_dir, current_adapter, current_name

        directory = adapters_dir()
        try:
            from refresh.base import gguf_sha256
            from refresh.gguf_adapter import check_adapter

            if self.options.adapter_path:
                path = Path(self.options.adapter_path).expanduser()
                problem = None if path.is_file() else f"adapter: no file at {path}"
            elif current_name(directory) is None:
                return None  # nothing promoted: no need to hash the model
            else:
                path, problem = current_adapter(directory, gguf_sha256(model_path))
            if path is not None and problem is None:
                key = (str(path), path.stat().st_mtime_ns)
                if key not in self._adapter_checks:
                    self._adapter_checks[key] = check_adapter(path, model_path)
                verdict = self._adapter_checks[key]
                problem = verdict and f"adapter {path.parent.name}: {verdict}"
        except RegistryError as exc:
            path, problem = None, f"adapter: {exc}"
        except Exception as exc:  # an unreadable file never costs the completions
            path, problem = None, f"adapter: {type(exc).__name__}: {exc}"
        if problem:
            self._adapter_problem(problem)
            return None
        return path

    def _adapter_problem(self, problem: str) -> None:
        problem = " ".join(problem.split())
        self.tell(f"hindsight: {problem}; serving the base model", types.MessageType.Warning, key=f"adapter:{problem}")

    # -- the workspace index ----------------------------------------------------------------------------
    def start_index(self) -> None:
        root = self.workspace.root_path
        if not self.options.context.cross_file or not root:
            return
        from collector.paths import data_dir
        from retrieval.live import LiveIndex

        def open_text(uri: str) -> str | None:
            doc = self.workspace.text_documents.get(uri)
            return doc.source if doc is not None else None

        self.live = LiveIndex(Path(root), data_dir() / "index", open_text)
        for uri in list(self.workspace.text_documents):
            self.live.edited(uri)  # documents opened before the build: their text, not the disk's
        token = "hindsight-index"
        caps = self.client_capabilities
        progress = bool(caps.window and caps.window.work_done_progress)
        if progress:
            self.work_done_progress.create(token)
            self.work_done_progress.begin(
                token, types.WorkDoneProgressBegin(title="hindsight: indexing the workspace", percentage=0)
            )
        last = [-1]

        def report(done: int, total: int) -> None:
            percent = done * 100 // max(total, 1)
            if progress and percent != last[0] and self.loop is not None:
                last[0] = percent
                value = types.WorkDoneProgressReport(message=f"{done}/{total} files", percentage=percent)
                self.loop.call_soon_threadsafe(self.work_done_progress.report, token, value)

        def finished(stats, error) -> None:
            if error is not None:
                self.tell(f"hindsight: indexing failed ({error}); no cross-file context", types.MessageType.Warning)
                message = "failed"
            else:
                self.index_stats = stats
                message = f"{stats.files} files, {stats.chunks} chunks in {stats.seconds:.1f} s"
                log.info("index: %s (%d parsed, skipped %s)", message, stats.parsed, stats.skipped or "none")
            if progress and self.loop is not None:
                self.loop.call_soon_threadsafe(self.work_done_progress.end, token, types.WorkDoneProgressEnd(message=message))

        self.live.start(report, finished)

    def _retrieve(self, req: CompletionRequest, window_start: int):
        return self.live.retrieve(req, window_start) if self.live is not None else []

    def watch_files(self) -> None:
        """Ask the client to tell us about files changed on disk (the index follows them)."""
        caps = self.client_capabilities.workspace
        watched = caps and caps.did_change_watched_files
        if self.live is None or not (watched and watched.dynamic_registration):
            return
        glob = "**/*.{" + ",".join(sorted(ext.lstrip(".") for ext in SOURCE_EXTENSIONS)) + "}"
        options = types.DidChangeWatchedFilesRegistrationOptions(watchers=[types.FileSystemWatcher(glob_pattern=glob)])
        registration = types.Registration(
            id="hindsight-watch", method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES, register_options=options
        )
        self.client_register_capability(types.RegistrationParams(registrations=[registration]))

    def reload_engine(self) -> None:
        """On the model worker: drop the model and load it again (a new model file, or after a failure),
        and the promoted gate and adapter with it."""
        self.load_gate()
        self.engine = self.engine_error = self.adapter = None
        self._told.discard("engine")
        gc.collect()  # free the old model's memory before the new one is mapped
        self.load_engine()

    def tell(self, message: str, kind=types.MessageType.Info, *, key: str | None = None) -> None:
        """window/showMessage, once per key; safe from any thread."""
        key = key or message
        if key in self._told:
            return
        self._told.add(key)
        log.warning("%s", message)
        params = types.ShowMessageParams(type=kind, message=message)
        if self.loop is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self.window_show_message, params)

    # -- completion -----------------------------------------------------------------------------------
    async def inline_completion(self, params: types.InlineCompletionParams):
        received = time.perf_counter()
        uri = params.text_document.uri
        doc = self.workspace.get_text_document(uri)
        text = doc.source
        lines = text.split("\n")
        pos = params.position
        if pos.line >= len(lines):
            raise JsonRpcInvalidParams(f"line {pos.line} is past the end of {uri} ({len(lines)} lines)")
        line_units = doc.position_codec.client_num_units(lines[pos.line])
        if pos.character > line_units:
            raise JsonRpcInvalidParams(
                f"character {pos.character} is past the end of line {pos.line} ({line_units} units)"
            )
        server_pos = doc.position_codec.position_from_client_units(lines, pos)
        language = normalize_language(doc.language_id, uri)
        if language not in self.options.languages:
            return None

        if self._inflight is not None:
            self._inflight.set()  # the newest request wins
        cancel = self._inflight = threading.Event()
        request_id = uuid.uuid4().hex[:16]
        req = CompletionRequest(
            uri=uri,
            text=text,
            line=server_pos.line,
            character=server_pos.character,
            language=language,
            path=self._display_path(uri),
            request_id=request_id,
            cancelled=cancel.is_set,
            lines=lines,
        )
        # Asked for explicitly (a key, not typing): alternatives to cycle through, at their extra cost.
        invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        n_alternatives = self.options.completion.alternatives if invoked else 0
        cursor = Cursor(lines, server_pos.line, server_pos.character, language)
        gate = _GateRun(self.policy, cursor, invoked)
        req.admit = gate.before
        future = self.worker.submit(self._complete_on_worker, req, received, n_alternatives, gate)
        try:
            completion, alternatives, error = await asyncio.wrap_future(future)
        except asyncio.CancelledError:  # $/cancelRequest
            cancel.set()
            self._record(req, None, "cancelled", received)
            raise
        if error is not None:
            self._record(req, None, "error", received, error=error)
            return None
        if completion is None:
            return None
        if completion.cancelled:
            self._record(req, completion, "cancelled", received, gate=gate.decision)
            return None
        if completion.withheld:
            decision = "withheld_stage1"
        elif gate.decision is not None and not gate.decision.proceed:
            decision = "withheld_stage2"
        else:
            decision = "show" if completion.text else "empty"
        self.tracker.new_request(uri, completion.parent_id)
        self.choices.pop(uri, None)
        self._record(req, completion, decision, received, gate=gate.decision)
        self.served += 1
        if decision != "show":
            return types.InlineCompletionList(items=[])
        self.tracker.shown(uri, request_id, (server_pos.line, server_pos.character), completion.text)
        choices = {request_id: completion.text}
        for alt in alternatives:
            alt_req = dataclasses.replace(req, request_id=uuid.uuid4().hex[:16])
            self._record(alt_req, alt, "alternative", received, alternative_of=request_id)
            choices[alt_req.request_id] = alt.text
        self.choices[uri] = choices
        return types.InlineCompletionList(
            items=[
                types.InlineCompletionItem(
                    insert_text=text,
                    range=types.Range(start=pos, end=pos),
                    command=types.Command(title="Accept", command=ACCEPT, arguments=[{"id": id}]),
                )
                for id, text in choices.items()
            ]
        )

    def _complete_on_worker(self, req: CompletionRequest, received: float, n_alternatives: int = 0, gate: "_GateRun | None" = None):
        """(the completion, its alternatives, an error message). The gate's stage 1 runs inside the
        engine (once the context is known), stage 2 here."""
        queued = (time.perf_counter() - received) * 1000
        if req.cancelled():
            return Completion("", "single", "model", None, LogprobSummary(), {"queue_ms": queued}, cancelled=True), [], None
        engine = self.load_engine()
        if engine is None:
            return None, [], None
        try:
            completion = engine.complete(req)
            if gate is not None and completion.source == "model" and completion.text and not completion.cancelled:
                if not gate.after(completion):
                    engine.cache.drop(req.uri)  # typing on must not bring the withheld suggestion back
            alternatives = engine.alternatives(req, completion, n_alternatives) if n_alternatives and completion.text else []
        except BackendError as exc:
            self.tell(f"hindsight: {exc}", types.MessageType.Error, key=f"backend:{exc}")
            return None, [], str(exc)
        except Exception as exc:  # a bug must not take the server down
            log.exception("completion failed")
            return None, [], f"{type(exc).__name__}: {exc}"
        completion.timings_ms["queue_ms"] = queued
        return completion, alternatives, None

    def _record(
        self, req: CompletionRequest, c: Completion | None, decision: str, received: float, error=None, alternative_of=None,
        gate: Decision | None = None,
    ):
        latency = (time.perf_counter() - received) * 1000
        if gate is not None and c is not None:
            c.timings_ms.update(gate.timings_ms)
        row: dict[str, Any] = {
            "id": req.request_id,
            "session_id": self.session_id,
            "alternative_of": alternative_of,
            "uri": req.uri,
            "language": req.language,
            "line": req.line,
            "character": req.character,
            "decision": decision,
            "latency_ms": latency,
            "error": error,
        }
        if self.engine is not None:
            row["model"] = self.engine.backend.name
            row["backend"] = self.options.backend
        if c is not None:
            row.update(
                completion=c.text,
                mode=c.mode,
                source=c.source,
                parent_id=c.parent_id,
                timings_json=dict(c.timings_ms, server_ms=latency),
            )
            row.update(
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
            row.update(gate.record(), gate_version=self.policy.version)
        try:
            self.store.insert_request(row)
        except Exception:
            log.exception("could not record request %s", req.request_id)

    def _display_path(self, uri: str) -> str:
        path = to_fs_path(uri) or uri
        root = self.workspace.root_path
        if root:
            try:
                return str(Path(path).relative_to(root))
            except ValueError:
                pass
        return Path(path).name

    # -- outcomes -------------------------------------------------------------------------------------
    def _lines(self, uri: str) -> list[str] | None:
        doc = self.workspace.text_documents.get(uri)
        return doc.source.split("\n") if doc is not None else None

    def document_changed(self, uri: str, start, end, text: str) -> None:
        typed = len(text) <= 2 and start[0] == end[0] and end[1] - start[1] <= 1  # a key, not a paste
        if typed and (text or end != start):
            self.user.keystroke()
        if self.live is not None:
            self.live.edited(uri)
        if self.tracker.tracks(uri):  # most keystrokes: nothing to follow, no need to split the document
            self.tracker.changed(uri, start, end, text, self._lines(uri) or [])

    def document_replaced(self, uri: str) -> None:
        if self.live is not None:
            self.live.edited(uri)
        self.tracker.replaced(uri, self._lines(uri) or [])

    def document_closed(self, uri: str, lines: list[str]) -> None:
        if self.live is not None:
            self.live.on_disk(uri)
        self.tracker.closed(uri, lines)

    def switched(self, request_id: str) -> None:
        """didShow for one of the last items: the user may have cycled to it."""
        for uri, choices in self.choices.items():
            if request_id in choices:
                self.tracker.switched(uri, request_id, choices[request_id])
                return

    def event(self, kind: str, request_id: str | None, payload: dict) -> None:
        try:
            self.store.add_event(kind, request_id, payload)
        except Exception:
            log.exception("could not record event %s", kind)

    def accept(self, request_id: str) -> None:
        self.event("accept", request_id, {"id": request_id})
        uri = self.tracker.accepted_by_client(request_id)
        if uri is None or self.loop is None:
            return
        delays = self.options.persistence_delays_s[:2]
        for i, (delay, slot) in enumerate(zip(delays, ("30s", "120s"))):
            last = i == len(delays) - 1
            self.loop.call_later(delay, self._check_persistence, uri, request_id, slot, last)

    def _check_persistence(self, uri: str, request_id: str, slot: str, last: bool) -> None:
        try:
            self.tracker.check_persistence(uri, request_id, slot, self._lines(uri), last)
        except Exception:
            log.exception("persistence check failed")

    def status(self) -> dict[str, Any]:
        stats = None
        try:
            stats = self.store.stats()
        except Exception as exc:
            stats = {"error": str(exc)}
        return {
            "version": __version__,
            "backend": self.options.backend,
            "model": self.engine.backend.name if self.engine else self.options.model or "embedded",
            "modelLoaded": self.engine is not None,
            "modelError": self.engine_error,
            "adapter": self.adapter,
            "promptFormat": ("fim" if self.engine.config.fim else "prefix") if self.engine else None,
            "database": str(getattr(self.store, "path", "") or "") or None,
            "served": self.served,
            "index": None
            if self.index_stats is None
            else {"files": self.index_stats.files, "chunks": self.index_stats.chunks, "seconds": self.index_stats.seconds},
            "stats": stats,
        }

    def shutdown_work(self) -> None:
        if self._inflight is not None:
            self._inflight.set()
        if self.live is not None:
            self.live.close()
        try:
            self.store.expire_open()
        except Exception:
            log.exception("could not expire open suggestions")


server = HindsightServer()


def _arg(params: Any, name: str):
    if isinstance(params, dict):
        return params.get(name)
    return getattr(params, name, None)


@server.feature(types.INITIALIZE)
def initialize(ls: HindsightServer, params: types.InitializeParams):
    ls.configure(params.initialization_options)


@server.feature(types.INITIALIZED)
def initialized(ls: HindsightServer, params: types.InitializedParams):
    ls.start_index()
    ls.watch_files()
    ls.worker.submit(ls.load_engine)  # warm the model while the user opens files


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: HindsightServer, params: types.DidOpenTextDocumentParams):
    if ls.live is not None:
        ls.live.opened(params.text_document.uri, params.text_document.text)


@server.feature(types.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: HindsightServer, params: types.DidSaveTextDocumentParams):
    if ls.live is not None:  # saved: the disk has its text (the one being typed in included)
        ls.live.on_disk(params.text_document.uri)


@server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
def did_change_watched_files(ls: HindsightServer, params: types.DidChangeWatchedFilesParams):
    for change in params.changes if ls.live is not None else []:
        if change.uri not in ls.workspace.text_documents:  # an open document follows its edits instead
            ls.live.on_disk(change.uri)


@server.feature(types.SHUTDOWN)
def shutdown(ls: HindsightServer, params):
    ls.shutdown_work()


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def inline_completion(ls: HindsightServer, params: types.InlineCompletionParams):
    return await ls.inline_completion(params)


@server.command(ACCEPT)
def accept(ls: HindsightServer, *args):
    request_id = _arg(args[0], "id") if args else None
    if not isinstance(request_id, str):
        raise JsonRpcInvalidParams(f"{ACCEPT} expects [{{\"id\": <suggestion id>}}]")
    ls.accept(request_id)


@server.command(STATUS)
def status(ls: HindsightServer, *args):
    return ls.status()


@server.command(RELOAD)
async def reload(ls: HindsightServer, *args):
    """Re-read the model; the running request, if any, finishes first (the worker is a queue of one)."""
    await asyncio.wrap_future(ls.worker.submit(ls.reload_engine))
    return ls.status()


@server.feature(DID_SHOW)
def did_show(ls: HindsightServer, params):
    request_id = _arg(params, "id")
    if isinstance(request_id, str):
        ls.event("show", request_id, {"id": request_id})
        ls.store.mark_shown(request_id)
        ls.switched(request_id)


@server.feature(DID_PARTIALLY_ACCEPT)
def did_partially_accept(ls: HindsightServer, params):
    request_id, length = _arg(params, "id"), _arg(params, "acceptedLength")
    if isinstance(request_id, str) and isinstance(length, int) and length >= 0:
        ls.event("partial_accept", request_id, {"id": request_id, "acceptedLength": length})
        ls.tracker.partially_accepted(request_id, length)


@server.feature(DID_REJECT)
def did_reject(ls: HindsightServer, params):
    request_id, reason = _arg(params, "id"), _arg(params, "reason")
    if isinstance(request_id, str):
        reason = reason if reason in REJECT_REASONS else "dismissed"
        ls.event("reject", request_id, {"id": request_id, "reason": reason})
        ls.tracker.rejected_by_client(request_id, reason)
