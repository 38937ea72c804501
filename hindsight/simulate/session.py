"""A real hindsight server process and a real LSP client talking to it over stdio.

Used by the demo, the benchmarks and the end-to-end tests' helpers: nothing here is a stand-in, the
server is `hindsight serve` in its own process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient


@dataclass
class Document:
    uri: str
    text: str
    language_id: str
    version: int = 1

    def offset(self, line: int, character: int) -> int:
        lines = self.text.split("\n")
        return sum(len(l) + 1 for l in lines[:line]) + character

    def position(self, offset: int) -> types.Position:
        before = self.text[:offset]
        line = before.count("\n")
        return types.Position(line=line, character=offset - (before.rfind("\n") + 1))


@dataclass
class Session:
    client: LanguageClient
    process_pid: int | None = None
    messages: list[str] = field(default_factory=list)
    progress: list[Any] = field(default_factory=list)  # $/progress values (begin, report, end), when asked for

    @classmethod
    async def start(
        cls,
        root: Path,
        *,
        options: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        log_file: Path | None = None,
        progress: bool = False,
    ) -> "Session":
        """`progress`: the client takes $/progress (window.workDoneProgress), kept in `progress`."""
        client = LanguageClient("hindsight-session", "0.1")
        session = cls(client)

        @client.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
        def _create(params: types.WorkDoneProgressCreateParams):
            return None

        @client.feature(types.PROGRESS)
        def _progress(params: types.ProgressParams):
            session.progress.append(params.value)

        @client.feature(types.WINDOW_SHOW_MESSAGE)
        def _show(params: types.ShowMessageParams):
            session.messages.append(params.message)

        @client.feature(types.WINDOW_LOG_MESSAGE)
        def _log(params: types.LogMessageParams):
            pass

        args = ["-m", "hindsight"]
        if log_file is not None:
            args += ["--log-file", str(log_file)]
        args.append("serve")
        await client.start_io(sys.executable, *args, env={**os.environ, **(env or {})})
        session.process_pid = client._server.pid if client._server else None
        await client.initialize_async(
            types.InitializeParams(
                process_id=os.getpid(),
                root_uri=root.resolve().as_uri(),
                capabilities=types.ClientCapabilities(
                    window=types.WindowClientCapabilities(work_done_progress=True) if progress else None
                ),
                initialization_options=options or {},
            )
        )
        client.initialized(types.InitializedParams())
        return session

    async def open(self, path: Path, text: str | None = None, language_id: str = "python") -> Document:
        doc = Document(path.resolve().as_uri(), path.read_text() if text is None else text, language_id)
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=doc.uri, language_id=language_id, version=doc.version, text=doc.text
                )
            )
        )
        return doc

    def insert(self, doc: Document, offset: int, text: str, remove: int = 0) -> None:
        """An incremental change: replace `remove` characters at `offset` with `text`."""
        start = doc.position(offset)
        end = doc.position(offset + remove)
        doc.text = doc.text[:offset] + text + doc.text[offset + remove :]
        doc.version += 1
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version),
                content_changes=[
                    types.TextDocumentContentChangePartial(range=types.Range(start=start, end=end), text=text)
                ],
            )
        )

    async def complete(self, doc: Document, offset: int) -> tuple[types.InlineCompletionItem | None, float]:
        """Ask for an inline completion at `offset` as typing does; the first item and the round-trip ms."""
        items, ms = await self.ask(doc, offset, types.InlineCompletionTriggerKind.Automatic)
        return (items[0] if items else None), ms

    async def ask(
        self, doc: Document, offset: int, kind=types.InlineCompletionTriggerKind.Invoked
    ) -> tuple[list[types.InlineCompletionItem], float]:
        """All the items at `offset` (asked for explicitly by default: with alternatives) and the ms."""
        t0 = time.perf_counter()
        result = await self.client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=doc.uri),
                position=doc.position(offset),
                context=types.InlineCompletionContext(trigger_kind=kind),
            )
        )
        ms = (time.perf_counter() - t0) * 1000
        items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
        return list(items), ms

    def send(
        self, doc: Document, offset: int, kind=types.InlineCompletionTriggerKind.Automatic
    ) -> concurrent.futures.Future:
        """Send an inline completion request at `offset` without waiting: the future of its answer
        (resolved on the client's event loop; an error answer is a pygls `JsonRpcException`)."""
        return self.client.text_document_inline_completion(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=doc.uri),
                position=doc.position(offset),
                context=types.InlineCompletionContext(trigger_kind=kind),
            )
        )

    @staticmethod
    def item_id(item: types.InlineCompletionItem) -> str:
        arg = item.command.arguments[0]
        return arg["id"] if isinstance(arg, dict) else arg.id

    async def accept(self, item: types.InlineCompletionItem) -> Any:
        return await self.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=item.command.command, arguments=item.command.arguments)
        )

    def did_show(self, item) -> None:
        self.client.protocol.notify("hindsight/didShow", {"id": self.item_id(item)})

    def did_partially_accept(self, item, length: int) -> None:
        self.client.protocol.notify("hindsight/didPartiallyAccept", {"id": self.item_id(item), "acceptedLength": length})

    def did_reject(self, item, reason: str = "dismissed") -> None:
        self.client.protocol.notify("hindsight/didReject", {"id": self.item_id(item), "reason": reason})

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.client.shutdown_async(None), 30)
            self.client.exit(None)
        except Exception:
            pass
        try:
            await asyncio.wait_for(self.client.stop(), 30)
        except Exception:
            if self.client._server is not None:
                self.client._server.kill()
