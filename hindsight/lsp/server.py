"""The language server: LSP in, the pipeline's calls out, and back.

Each handler translates one LSP message into a call on `hindsight.pipeline.Pipeline` (which owns the
completion path, the log, the model, the gate and the index) and its answer back into LSP: positions in
the client's units, errors as JSON-RPC errors, messages as window/showMessage, the index's and the
learning loop's progress as $/progress. The framing that survives bad clients is `protocol.HindsightProtocol`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from lsprotocol import types
from pygls.exceptions import JsonRpcContentModified, JsonRpcInvalidParams
from pygls.io_ import StdinAsyncReader, StdoutWriter
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from hindsight import __version__
from hindsight.lsp.protocol import HindsightProtocol
from hindsight.pipeline.learning import Progress
from hindsight.pipeline.pipeline import Lead, Pipeline, Stale
from hindsight.request import CompletionRequest
from hindsight.syntax import SOURCE_EXTENSIONS, normalize_language

log = logging.getLogger("hindsight")

ACCEPT = "hindsight.accept"
STATUS = "hindsight.status"
RELOAD = "hindsight.reload"
DID_SHOW = "hindsight/didShow"
DID_PARTIALLY_ACCEPT = "hindsight/didPartiallyAccept"
DID_REJECT = "hindsight/didReject"

MESSAGE_TYPES = {"error": types.MessageType.Error, "warning": types.MessageType.Warning, "info": types.MessageType.Info}


class WorkDoneProgress(Progress):
    """A learning run's progress as $/progress, when the client takes it (window.workDoneProgress)."""

    def __init__(self, server: "HindsightServer"):
        self.server = server
        self.token: str | None = None

    def _supported(self) -> bool:
        caps = self.server.client_capabilities
        return bool(caps and caps.window and caps.window.work_done_progress)

    def begin(self, title: str) -> None:
        if not self._supported():
            return
        self.token = f"hindsight-learn-{time.time_ns()}"
        self.server.work_done_progress.create(self.token)
        self.server.work_done_progress.begin(self.token, types.WorkDoneProgressBegin(title=title, cancellable=False))

    def report(self, message: str) -> None:
        if self.token is not None:
            self.server.work_done_progress.report(self.token, types.WorkDoneProgressReport(message=message))

    def end(self, message: str) -> None:
        if self.token is not None:
            self.server.work_done_progress.end(self.token, types.WorkDoneProgressEnd(message=message))
            self.token = None


class HindsightServer(LanguageServer):
    def __init__(self):
        super().__init__(
            "hindsight",
            __version__,
            protocol_cls=HindsightProtocol,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
        )
        self.pipeline = Pipeline(sink=self.show_message, progress=WorkDoneProgress(self))

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

    def show_message(self, message: str, level: str) -> None:
        """window/showMessage; safe from any thread (the pipeline tells from the model worker too)."""
        loop = self.pipeline.loop
        if loop is not None and loop.is_running():
            params = types.ShowMessageParams(type=MESSAGE_TYPES[level], message=message)
            loop.call_soon_threadsafe(self.window_show_message, params)

    # -- documents --------------------------------------------------------------------------------------
    def open_document(self, uri: str):
        """The document as the client sent it, or None if it is not open. (pygls' `get_text_document` would
        read one that is not open from disk: any file, a FIFO that blocks, /dev/zero.)"""
        return self.workspace.text_documents.get(unquote(uri))  # pygls keys them unquoted

    def lines(self, uri: str) -> list[str] | None:
        doc = self.open_document(uri)
        return doc.source.split("\n") if doc is not None else None

    def document_changed(self, uri: str, start, end, text: str) -> None:
        self.pipeline.document_changed(uri, start, end, text, lambda: self.lines(uri) or [])

    def document_replaced(self, uri: str) -> None:
        self.pipeline.document_replaced(uri, self.lines(uri) or [])

    def document_closed(self, uri: str, lines: list[str]) -> None:
        self.pipeline.document_closed(uri, lines)

    def display_path(self, uri: str) -> str:
        """The file's path as the model sees it in the prompt: relative to the workspace when inside it."""
        path = to_fs_path(uri) or uri
        root = self.workspace.root_path
        if root:
            try:
                return str(Path(path).relative_to(root))
            except ValueError:
                pass
        return Path(path).name

    # -- the workspace index --------------------------------------------------------------------------
    def start_index(self) -> None:
        root = self.workspace.root_path
        if not root:
            return
        token = "hindsight-index"
        caps = self.client_capabilities
        progress = bool(caps.window and caps.window.work_done_progress)
        loop = self.pipeline.loop
        last = [-1]

        def report(done: int, total: int) -> None:
            percent = done * 100 // max(total, 1)
            if progress and percent != last[0] and loop is not None:
                last[0] = percent
                value = types.WorkDoneProgressReport(message=f"{done}/{total} files", percentage=percent)
                loop.call_soon_threadsafe(self.work_done_progress.report, token, value)

        def finished(stats, error) -> None:
            if progress and loop is not None:
                message = "failed" if error else f"{stats.files} files, {stats.chunks} chunks in {stats.seconds:.1f} s"
                loop.call_soon_threadsafe(self.work_done_progress.end, token, types.WorkDoneProgressEnd(message=message))

        def open_text(uri: str) -> str | None:
            doc = self.workspace.text_documents.get(uri)
            return doc.source if doc is not None else None

        if progress and self.pipeline.options.context.cross_file:
            self.work_done_progress.create(token)
            begin = types.WorkDoneProgressBegin(title="hindsight: indexing the workspace", percentage=0)
            self.work_done_progress.begin(token, begin)
        self.pipeline.start_index(Path(root), open_text, list(self.workspace.text_documents), report, finished)

    def watch_files(self) -> None:
        """Ask the client to tell us about files changed on disk (the index follows them)."""
        caps = self.client_capabilities.workspace
        watched = caps and caps.did_change_watched_files
        if self.pipeline.live is None or not (watched and watched.dynamic_registration):
            return
        glob = "**/*.{" + ",".join(sorted(ext.lstrip(".") for ext in SOURCE_EXTENSIONS)) + "}"
        options = types.DidChangeWatchedFilesRegistrationOptions(watchers=[types.FileSystemWatcher(glob_pattern=glob)])
        registration = types.Registration(
            id="hindsight-watch", method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES, register_options=options
        )
        self.client_register_capability(types.RegistrationParams(registrations=[registration]))

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
        cursor = (server_pos.line, server_pos.character)
        selected = params.context.selected_completion_info
        replaced = self.replaced(lines, cursor, selected, doc.position_codec) if selected else None
        lead = Lead(replaced[0], selected.text) if replaced else None
        prompt_text, prompt_lines = text, lines
        if replaced:  # complete the document as if the selected item were written
            (line, start), (_, end) = replaced
            prompt_lines = [*lines[:line], lines[line][:start] + selected.text + lines[line][end:], *lines[line + 1 :]]
            prompt_text = "\n".join(prompt_lines)
            cursor = (line, start + len(selected.text))
        req = CompletionRequest(
            uri=uri,
            text=prompt_text,
            line=cursor[0],
            character=cursor[1],
            language=normalize_language(doc.language_id, uri),
            path=self.display_path(uri),
            repo=Path(self.workspace.root_path).name if self.workspace.root_path else "",
            lines=prompt_lines,
        )

        def current() -> bool:  # the document is as the request has it (polled on the model worker)
            now = self.open_document(uri)
            return now is not None and now.version == version and now.source == text

        # Asked for explicitly (a key, not typing): alternatives to cycle through, at their extra cost.
        invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        try:
            suggestions = await self.pipeline.complete(req, invoked=invoked, received=received, current=current,
                                                       lead=lead)
        except Stale as exc:
            raise JsonRpcContentModified(str(exc)) from None
        if suggestions is None:
            return None
        # With a lead the items replace the selected item's range, as the suggest widget would; else they
        # insert at the cursor, said by no range (Neovim draws an item with a range over the text after it).
        drawn = selected.range if lead is not None else None
        return types.InlineCompletionList(
            items=[
                types.InlineCompletionItem(
                    insert_text=s.text,
                    range=drawn,
                    command=types.Command(title="Accept", command=ACCEPT, arguments=[{"id": s.id}]),
                )
                for s in suggestions
            ]
        )

    @staticmethod
    def replaced(lines: list[str], cursor: tuple[int, int], selected: types.SelectedCompletionInfo,
                 codec) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """Where the suggest widget's selected item goes, in the server's units: its range, when that is on
        the cursor's line and holds the cursor (VS Code sends the word typed so far, from its start to the
        cursor) and the item is one line; else None, and the request is completed as if none were selected."""
        start, end = selected.range.start, selected.range.end
        if not (start.line == end.line == cursor[0] and start.character <= end.character) or "\n" in selected.text:
            return None
        start, end = (codec.position_from_client_units(lines, p) for p in (start, end))
        if not start.character <= cursor[1] <= end.character:
            return None
        return (start.line, start.character), (end.line, end.character)


server = HindsightServer()


def _arg(params: Any, name: str):
    if isinstance(params, dict):
        return params.get(name)
    return getattr(params, name, None)


@server.feature(types.INITIALIZE)
def initialize(ls: HindsightServer, params: types.InitializeParams):
    ls.pipeline.configure(params.initialization_options)


@server.feature(types.INITIALIZED)
def initialized(ls: HindsightServer, params: types.InitializedParams):
    ls.start_index()
    ls.watch_files()
    ls.pipeline.worker.submit(ls.pipeline.load_engine)  # warm the model while the user opens files


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: HindsightServer, params: types.DidOpenTextDocumentParams):
    ls.pipeline.document_opened(params.text_document.uri, params.text_document.text)


@server.feature(types.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: HindsightServer, params: types.DidSaveTextDocumentParams):
    ls.pipeline.file_on_disk(params.text_document.uri)  # saved: the disk has its text


@server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
def did_change_watched_files(ls: HindsightServer, params: types.DidChangeWatchedFilesParams):
    for change in params.changes:
        if change.uri not in ls.workspace.text_documents:  # an open document follows its edits instead
            ls.pipeline.file_on_disk(change.uri)


@server.feature(types.SHUTDOWN)
def shutdown(ls: HindsightServer, params):
    ls.pipeline.shutdown()


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def inline_completion(ls: HindsightServer, params: types.InlineCompletionParams):
    return await ls.inline_completion(params)


@server.command(ACCEPT)
def accept(ls: HindsightServer, *args):
    request_id = _arg(args[0], "id") if args else None
    if not isinstance(request_id, str):
        raise JsonRpcInvalidParams(f"{ACCEPT} expects [{{\"id\": <suggestion id>}}]")
    ls.pipeline.accepted(request_id, ls.lines)


@server.command(STATUS)
def status(ls: HindsightServer, *args):
    return ls.pipeline.status()


@server.command(RELOAD)
async def reload(ls: HindsightServer, *args):
    """Re-read the model, adapter and gate; answers the status, and in `reloadProblems` the warnings and
    errors of this reload (also those already shown once)."""
    problems = await ls.pipeline.reload()
    return {**ls.pipeline.status(), "reloadProblems": problems}


@server.feature(DID_SHOW)
def did_show(ls: HindsightServer, params):
    request_id = _arg(params, "id")
    if isinstance(request_id, str):
        ls.pipeline.shown(request_id)


@server.feature(DID_PARTIALLY_ACCEPT)
def did_partially_accept(ls: HindsightServer, params):
    request_id, length = _arg(params, "id"), _arg(params, "acceptedLength")
    if isinstance(request_id, str) and isinstance(length, int) and length >= 0:
        ls.pipeline.partially_accepted(request_id, length)


@server.feature(DID_REJECT)
def did_reject(ls: HindsightServer, params):
    request_id = _arg(params, "id")
    if isinstance(request_id, str):
        ls.pipeline.rejected(request_id, _arg(params, "reason"))
