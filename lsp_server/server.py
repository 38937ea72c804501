"""The language server: protocol only. Documents, requests, cancellation, commands, notifications.

One `HindsightServer` owns the state. Handlers translate LSP types into plain calls into `engine/` and
`collector/`; generation runs on a single model worker thread (llama.cpp is not thread-safe), never on
the event loop. A part that fails (model, database) is reported once and the server goes on without it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
import re
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from lsprotocol import types
from pygls.exceptions import (
    JsonRpcContentModified,
    JsonRpcException,
    JsonRpcInvalidParams,
    JsonRpcInvalidRequest,
    JsonRpcMethodNotFound,
    JsonRpcParseError,
)
from pygls.io_ import StdinAsyncReader, StdoutWriter
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol, lsp_method
from pygls.protocol.json_rpc import RPCRequest
from pygls.uris import to_fs_path

from collector.store import FULL, Store, StoreError, open_store
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

# A header that ends its line: what is left of a body sent too short runs on into the next header line.
CONTENT_LENGTH = re.compile(rb"Content-Length:[ \t]*(\d+)\s*$", re.IGNORECASE)
MAX_BODY = 256 * 2**20  # bytes; no editor sends more (VS Code does not sync files over 50 MB)


class HindsightProtocol(LanguageServerProtocol):
    """pygls' protocol, made to answer every request. pygls 2.1.1 drops what it cannot read (broken JSON,
    a message of the wrong shape, params that fail to deserialize) and the client waits forever; one bad
    Content-Length header and it never finds the next message again."""

    async def read_messages(self, reader, stop_event: threading.Event) -> None:
        """pygls' `run_async` loop, robust to bad framing. A header block with no valid Content-Length, or one
        over MAX_BODY, is answered with a ParseError and reading goes on at the next Content-Length header.
        (A Content-Length longer than the body cannot be told from a slow client: it eats the next message.)"""
        length, in_headers = None, False
        while not stop_event.is_set():
            line = await reader.readline()
            if not line:
                return  # the client has gone
            if line.strip():
                if match := CONTENT_LENGTH.search(line):
                    length = int(match.group(1))
                in_headers = True
                continue
            if not in_headers:
                continue  # a stray blank line between messages
            size, length, in_headers = length, None, False
            if size is None or size > MAX_BODY:
                too_big = f"Content-Length {size} is over {MAX_BODY}"
                self.answer_error(None, JsonRpcParseError("no valid Content-Length header" if size is None else too_big))
                continue
            try:
                body = await reader.readexactly(size)
            except asyncio.IncompleteReadError:  # TCP: the client has gone
                return
            if len(body) < size:
                return
            try:
                self.receive(body)
            except Exception:  # a bug in handling one message must not stop the server reading
                log.exception("could not handle a message")

    def receive(self, body: bytes) -> None:
        """One message body. What is not a message is answered with an error (JSON-RPC 2.0: with `"id": null`
        when its id cannot be read); the rest is structured and handled by pygls."""
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, or nested too deep
            return self.answer_error(None, JsonRpcParseError(f"not JSON: {exc}"))
        if not isinstance(data, dict):
            shape = type(data).__name__
            return self.answer_error(None, JsonRpcInvalidRequest(f"a message is a JSON object, not {shape}"))
        msg_id, method, is_request = data.get("id"), data.get("method"), "id" in data
        good_id = isinstance(msg_id, (int, str)) and not isinstance(msg_id, bool)
        if data.get("jsonrpc") == "2.0" and "method" not in data and ("result" in data or "error" in data):
            try:  # the client's answer to one of our requests
                self.handle_message(self.structure_message(data))
            except JsonRpcException:
                log.warning("unreadable response from the client: %.200r", body)
            return
        problem = (
            'jsonrpc must be "2.0"' if data.get("jsonrpc") != "2.0"
            else "no method" if "method" not in data
            else "method must be a string" if not isinstance(method, str)
            else "id must be an integer or a string" if is_request and not good_id
            else "a message is a request or a response, not both" if "result" in data or "error" in data
            else None
        )
        if problem:
            return self.answer_error(msg_id if good_id else None, JsonRpcInvalidRequest(problem))
        if self._shutdown and method != types.EXIT:
            if is_request:  # LSP: requests after shutdown are answered InvalidRequest
                self.answer_error(msg_id, JsonRpcInvalidRequest("the server is shutting down"))
            return
        if not (method == types.CANCEL_REQUEST or method in self.fm.builtin_features or method in self.fm.features):
            if is_request:  # before its params are read: hover with bad params is still a method we lack
                self.answer_error(msg_id, JsonRpcMethodNotFound.of(method))
            elif not method.startswith("$/"):  # LSP: $/ notifications a server does not know are ignored quietly
                log.info("ignoring the notification %s: no handler", method)
            return
        # Only the JSON-RPC members: pygls' message types for unknown methods take no others, and need params.
        data = {"jsonrpc": "2.0", "method": method, "params": data.get("params")} | ({"id": msg_id} if is_request else {})
        try:
            message = self.structure_message(data)
        except JsonRpcException as exc:
            if is_request:
                cause = str(exc.__cause__ or exc).splitlines()[0]
                self.answer_error(msg_id, JsonRpcInvalidParams(f"invalid params for {method}: {cause}"))
            return
        if is_request and not isinstance(message, RPCRequest):  # pygls would handle it as a notification
            problem = f"{method} is a notification: send it without an id"
            return self.answer_error(msg_id, JsonRpcInvalidRequest(problem))
        self.handle_message(message)

    def answer_error(self, msg_id, error: JsonRpcException) -> None:
        """An error response, `"id": null` included (lsprotocol's ResponseErrorMessage would leave it out)."""
        log.warning("answering %s: %s", msg_id, error.message)
        self._send_data({"jsonrpc": "2.0", "id": msg_id, "error": {"code": error.code, "message": error.message}})

    def _send_handler_result(self, future, *, msg_id):
        """ContentModified and InvalidParams are answers, not failures: sent without pygls' traceback."""
        error = None if future.cancelled() else future.exception()
        if isinstance(error, (JsonRpcContentModified, JsonRpcInvalidParams)):
            log.info("answering %s: %s", msg_id, error.message)
            self._request_futures.pop(msg_id, None)
            return self._send_response(msg_id, error=error.to_response_error())
        super()._send_handler_result(future, msg_id=msg_id)

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams):
        """Apply each change, and tell the server where it was in the document as it stood before."""
        uri = params.text_document.uri
        doc = self._server.open_document(uri)
        if doc is None:  # pygls would read the file from disk, then fail to update it
            log.warning("didChange for %s, which is not open: ignored", uri)
            return
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
        doc = self._server.open_document(uri)
        self._server.document_closed(uri, doc.source.split("\n") if doc else [])
        self.workspace.remove_text_document(uri)
        yield from ()


def _stat_key(path: Path) -> tuple:
    """One version of a file: its path, size and mtime (a file rewritten or replaced gets a new key)."""
    try:
        st = Path(path).stat()
        return (str(path), st.st_size, st.st_mtime_ns)
    except OSError:
        return (str(path), None, None)


class _NoStore:
    """Stands in when the database cannot be opened: the server still completes, nothing is recorded."""

    def __getattr__(self, name):
        return lambda *a, **k: None

    def set_outcome(self, *a, **k):
        return True


class _Recording:
    """The store as the server writes to it. A write that fails (a full disk, a database locked for longer
    than the busy timeout) is dropped, the user is told once, and the server goes on; the next request or
    event that is recorded says so (an update that matches nothing writes nothing, and proves nothing),
    and a later failure is told again. Reads pass through unchanged."""

    APPENDS = frozenset({"insert_request", "add_event"})  # always write a row: a success means there is room

    def __init__(self, store: Store, server: HindsightServer):
        self.store, self.server = store, server
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
                return name == "set_outcome" or None  # as _NoStore: the outcome still counts for the gate
            if self._failing and name in self.APPENDS:
                self._recovered()
            return result

        return write

    def _failed(self, exc: StoreError) -> None:
        with self._lock:
            self._failing = True
        self.server._told.discard("store-recovered")
        if exc.kind == FULL:
            message = f"hindsight: disk full: not recording until there is space ({self.store.path})"
        else:
            message = f"hindsight: not recording: {exc}"
        self.server.tell(message, types.MessageType.Error, key="store-write")

    def _recovered(self) -> None:
        with self._lock:
            if not self._failing:
                return
            self._failing = False
        self.server._told.discard("store-write")
        message = f"hindsight: recording again ({self.store.path})"
        self.server.tell(message, types.MessageType.Info, key="store-recovered")


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
        self._reload = threading.local()  # .problems: what a reload running on this thread was told
        self._inflight: threading.Event | None = None
        self.live = None  # retrieval.live.LiveIndex once the workspace index is started
        self.index_stats = None
        self.choices: dict[str, dict[str, str]] = {}  # uri → id → text of the last items returned there
        self.served = 0
        self.session_id = uuid.uuid4().hex[:16]  # this run of the server: one of the user's sessions
        self.user = UserState()
        self.policy = Policy(user=self.user)
        self.adapter: str | None = None  # the LoRA adapter the model runs with (its version name)
        self._adapter_checks: dict[tuple, str | None] = {}  # (adapter, model) stat keys → check_adapter's verdict
        self._model_checks: dict[tuple, str | None] = {}  # a model file's stat key → check_model's verdict
        self._loaded: tuple | None = None  # stat keys of the model and adapter files being served

    # -- transport: pygls' servers, reading with HindsightProtocol.read_messages ------------------------
    def start_io(self, stdin=None, stdout=None) -> None:
        self._stop_event = threading.Event()
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        reader = StdinAsyncReader(stdin or sys.stdin.buffer, self.thread_pool)
        try:
            asyncio.run(self.protocol.read_messages(reader, self._stop_event))
        except BrokenPipeError:
            log.error("the client has gone")
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            self.shutdown()

    def start_tcp(self, host: str, port: int) -> None:
        self._stop_event = threading.Event()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.protocol.set_writer(writer)
            await self.protocol.read_messages(reader, self._stop_event)
            self.shutdown()

        async def serve() -> None:
            self._server = await asyncio.start_server(connection, host, port)
            log.info("serving on %s:%s", host, port)
            async with self._server:
                await self._server.serve_forever()

        try:
            asyncio.run(serve())
        except asyncio.CancelledError:
            pass

    def open_document(self, uri: str):
        """The document as the client sent it, or None if it is not open. (pygls' `get_text_document` would
        read one that is not open from disk: any file, a FIFO that blocks, /dev/zero.)"""
        return self.workspace.text_documents.get(unquote(uri))  # pygls keys them unquoted

    # -- set-up ---------------------------------------------------------------------------------------
    def configure(self, raw_options: Any) -> None:
        self.loop = asyncio.get_running_loop()
        self.options, problems = parse_options(raw_options)
        if self.model_override:
            self.options.model = self.model_override
        for problem in problems:
            self.tell(f"hindsight: {problem}", types.MessageType.Warning, key=problem)
        store, notice = open_store(self.options.database_path)  # corrupt → moved aside; unwritable → default
        if notice:
            kind = types.MessageType.Error if store is None else types.MessageType.Warning
            self.tell(f"hindsight: {notice}", kind, key="store")
        self.store = _Recording(store, self) if store is not None else _NoStore()
        self.tracker = OutcomeTracker(_Outcomes(self.store, self.user))
        self.load_gate()

    def load_gate(self) -> None:
        """The promoted acceptance gate (`hindsight train-gate`), if there is one and it loads. One that
        does not load leaves the gate in use, if any, in place (on `hindsight.reload`)."""
        from collector.paths import data_dir
        from gating.gate import load_gate

        g = self.options.gate
        thresholds = Thresholds(g.stage1_threshold, g.threshold, g.exploration, g.shadow)
        gate, problem = (None, None) if not g.enabled else load_gate(data_dir() / "gates")
        if problem and self.policy.gate is not None:
            keeping = f"keeping gate {self.policy.version}"
            self.tell(f"hindsight: {problem}; {keeping}", types.MessageType.Warning, key=f"gate:{problem}")
            return
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
                model_path = self.checked_model()
                backend = self._llama(model_path, self.find_adapter(model_path))
        except BackendError as exc:
            self.engine_error = str(exc)
            self.tell(f"hindsight: {exc}; completions are off", types.MessageType.Error, key="engine")
            return None
        return self._start(backend)

    def _start(self, backend) -> Engine:
        """Serve `backend`: the engine over it, configured from the options."""
        from fim.format import FORMAT, declared_format

        opts = self.options
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

    def checked_model(self) -> Path:
        """On the model worker: the model file to serve, once llama.cpp has test-loaded it in a child
        process (`check_model`: once per file version, and a pass is remembered across starts).
        BackendError with one line when it cannot be served."""
        from engine.model import check_model, resolve_model

        model_path = resolve_model(self.options.model)
        key = _stat_key(model_path)
        if key not in self._model_checks:
            self._model_checks[key] = check_model(model_path)
        if self._model_checks[key]:
            raise BackendError(self._model_checks[key])
        return model_path

    def _llama(self, model_path: Path, adapter: Path | None):
        """The llama.cpp backend for checked files; an adapter it cannot apply after all is dropped."""
        from engine.llama_backend import LlamaBackend, adapter_name

        opts = self.options
        kwargs = dict(n_ctx=opts.n_ctx, n_threads=opts.n_threads, kv_reuse=opts.completion.kv_reuse)
        try:
            backend = LlamaBackend(model_path, lora_path=adapter, **kwargs)
        except BackendError as exc:
            if adapter is None:
                raise
            self._adapter_problem(f"{exc}")
            backend = LlamaBackend(model_path, **kwargs)
        self.adapter = adapter_name(backend.lora_path) if backend.lora_path else None
        self._loaded = (_stat_key(model_path), _stat_key(backend.lora_path) if backend.lora_path else None)
        return backend

    def find_adapter(self, model_path: Path) -> Path | None:
        """The promoted LoRA adapter for this model file (`promoted_adapter`), or None, and the user is
        told once why not."""
        path, problem = self.promoted_adapter(model_path)
        if problem:
            self._adapter_problem(problem)
        return path

    def promoted_adapter(self, model_path: Path) -> tuple[Path | None, str | None]:
        """(the promoted LoRA adapter for this model file, None) if the `adapter` option is on and it
        passes `check_adapter` (a test load in a child process, once per adapter and model version, a
        pass remembered across starts); (None, None) when there is none; (None, why) when it is bad."""
        if not self.options.adapter:
            return None, None
        from refresh.registry import RegistryError, adapters_dir, current_adapter, current_name

        directory = adapters_dir()
        try:
            from engine.model import is_verified, record_verified
            from refresh.base import gguf_sha256
            from refresh.gguf_adapter import check_adapter

            if self.options.adapter_path:
                path = Path(self.options.adapter_path).expanduser()
                problem = None if path.is_file() else f"adapter: no file at {path}"
            elif current_name(directory) is None:
                return None, None  # nothing promoted: no need to hash the model
            else:
                path, problem = current_adapter(directory, gguf_sha256(model_path))
            if path is not None and problem is None:
                key = (_stat_key(path), _stat_key(model_path))
                if key not in self._adapter_checks:
                    verdict = None if is_verified(model_path, path) else check_adapter(path, model_path)
                    if verdict is None:
                        record_verified(model_path, path)
                    self._adapter_checks[key] = verdict
                verdict = self._adapter_checks[key]
                problem = verdict and f"adapter {path.parent.name}: {verdict}"
        except RegistryError as exc:
            path, problem = None, f"adapter: {exc}"
        except Exception as exc:  # an unreadable file never costs the completions
            path, problem = None, f"adapter: {type(exc).__name__}: {exc}"
        return (None, " ".join(problem.split())) if problem else (path, None)

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

    def reload_engine(self) -> list[str]:
        """On the model worker: load the model again (a new model file or adapter, or after a failure),
        and the promoted gate and adapter with it. A model or adapter that fails its test load leaves the
        one being served in place (the last good one), and the user is told once; files unchanged since
        they were loaded are not loaded again. Returns this reload's problems, told before or not."""
        self._reload.problems = problems = []
        try:
            self._reload_engine()
        finally:
            self._reload.problems = None
        return problems

    def _reload_engine(self) -> None:
        self.load_gate()
        old = self.engine
        if old is None or self.options.backend == "http":
            self.engine = self.engine_error = self.adapter = None
            self._told.discard("engine")
            gc.collect()
            self.load_engine()
            return
        serving = f"still serving {old.backend.name}"
        try:
            model_path = self.checked_model()
        except BackendError as exc:
            self.tell(f"hindsight: {exc}; {serving}", types.MessageType.Error, key=f"reload:{exc}")
            return
        adapter, problem = self.promoted_adapter(model_path)
        same_model = self._loaded is not None and self._loaded[0] == _stat_key(model_path)
        if problem and same_model:  # keep the model and the adapter (or none) it runs with
            self.tell(f"hindsight: {problem}; {serving}", types.MessageType.Warning, key=f"adapter:{problem}")
            return
        if problem:
            self._adapter_problem(problem)
        if (_stat_key(model_path), _stat_key(adapter) if adapter else None) == self._loaded:
            return  # the same files: nothing to load
        self.engine = self.adapter = self._loaded = None
        del old
        gc.collect()  # free the old model's memory before the new one is read
        self.load_engine_from(model_path, adapter)

    def load_engine_from(self, model_path: Path, adapter: Path | None) -> Engine | None:
        """On the model worker: serve these checked files (reload)."""
        try:
            backend = self._llama(model_path, adapter)
        except BackendError as exc:
            self.engine_error = str(exc)
            self._told.discard("engine")
            self.tell(f"hindsight: {exc}; completions are off", types.MessageType.Error, key="engine")
            return None
        return self._start(backend)

    def tell(self, message: str, kind=types.MessageType.Info, *, key: str | None = None) -> None:
        """window/showMessage, once per key; safe from any thread."""
        problems = getattr(self._reload, "problems", None)
        if problems is not None and kind != types.MessageType.Info:
            problems.append(message)
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
        """Suggestions; an empty list (nothing to show, or withheld by the gate); null (a language that is
        off, no model, or superseded by a newer request while the text stayed the same: the client has moved
        on, and VS Code would log an error answer); or an error: InvalidParams (-32602) for a document that
        is not open or a position outside it, RequestCancelled (-32800) after $/cancelRequest, and
        ContentModified (-32801) when the document changed while the suggestion was being made, as
        rust-analyzer answers: the suggestion was made for text that is gone."""
        received = time.perf_counter()
        uri = params.text_document.uri
        doc = self.open_document(uri)
        if doc is None:  # an error, as rust-analyzer answers: the client has a bug worth seeing
            raise JsonRpcInvalidParams(f"{uri} is not open: send textDocument/didOpen first")
        text, version = doc.source, doc.version
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

        def stale() -> bool:  # polled on the model worker: a newer request or an edit stops the work
            return cancel.is_set() or doc.version != version or self.open_document(uri) is not doc

        request_id = uuid.uuid4().hex[:16]
        req = CompletionRequest(
            uri=uri,
            text=text,
            line=server_pos.line,
            character=server_pos.character,
            language=language,
            path=self._display_path(uri),
            request_id=request_id,
            cancelled=stale,
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
        now = self.open_document(uri)
        if now is None or (now.version, now.source) != (version, text):
            self._record(req, completion, "cancelled", received, error=error, gate=gate.decision)
            raise JsonRpcContentModified(f"{uri} changed while the suggestion was being made")
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
        doc = self.open_document(uri)
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
            "gate": self.policy.version,
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
    """Re-read the model, adapter and gate; one that fails its check leaves the last good one serving. The
    running request, if any, finishes first (the worker is a queue of one). Answers the status, and in
    `reloadProblems` the warnings and errors of this reload (also those already shown once)."""
    problems = await asyncio.wrap_future(ls.worker.submit(ls.reload_engine))
    return {**ls.status(), "reloadProblems": problems}


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
