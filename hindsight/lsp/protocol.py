"""JSON-RPC framing that survives a bad client: every request is answered, whatever arrives.

pygls 2.1.1 drops what it cannot read (broken JSON, a message of the wrong shape, params that fail to
deserialize) and the client waits forever; one bad Content-Length header and it never finds the next
message again. `HindsightProtocol` reads and checks each message itself and answers what pygls would drop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading

from lsprotocol import types
from pygls.exceptions import (
    JsonRpcContentModified,
    JsonRpcException,
    JsonRpcInvalidParams,
    JsonRpcInvalidRequest,
    JsonRpcMethodNotFound,
    JsonRpcParseError,
)
from pygls.protocol import LanguageServerProtocol, lsp_method
from pygls.protocol.json_rpc import RPCRequest

log = logging.getLogger("hindsight")

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
