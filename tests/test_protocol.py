"""Every request gets exactly one answer, whatever the client sends: the real server process, spoken to in
raw JSON-RPC (tests/raw_client.py) so that what no LSP library would send can be sent. Each case checks
the exact error code. The fast tests run without a model (a model path that does not exist: completions
answer null at once); the slow ones at the end load the real one.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from conftest import WORKSPACE, run_tmp
from raw_client import RawServer, frame

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
REQUEST_CANCELLED, CONTENT_MODIFIED = -32800, -32801

TMP = run_tmp("hindsight-protocol-")
NO_MODEL = {"model": str(TMP / "no-model.gguf"), "databasePath": str(TMP / "fast.db"), "context": {"crossFile": False}}
STATUS = {"command": "hindsight.status", "arguments": []}


@pytest.fixture(scope="module")
def server():
    s = RawServer()
    s.initialize(NO_MODEL)
    yield s
    assert not s.unframed, s.unframed  # nothing but framed JSON-RPC on stdout
    s.close()


def code(answer: dict) -> int:
    assert "error" in answer and "result" not in answer, answer
    return answer["error"]["code"]


def status(server: RawServer) -> dict:
    answer = server.call("workspace/executeCommand", STATUS)
    assert "result" in answer, answer
    return answer["result"]


def null_id_error(server: RawServer, data: bytes) -> dict:
    """Send raw bytes; the one `"id": null` error they bring. Checked once the server has read past them:
    the next request is answered (errors for unreadable messages are sent as they are read)."""
    before = len(server.null_id_errors())
    server.write(data)
    status(server)
    new = server.null_id_errors()[before:]
    assert len(new) == 1, new
    return new[0]


def completion_params(uri: str, line: int = 0, character: int = 0) -> dict:
    return {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}, "context": {"triggerKind": 1}}


_n = 0


def new_uri(name: str = "doc.py") -> str:
    global _n
    _n += 1
    return (TMP / f"{_n}_{name}").as_uri()


# -- bodies that are not messages ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [b'{"jsonrpc": "2.0", "id": 1, "meth', b'{"jsonrpc": "2.0",}', b"\xff\xfe\x00garbage", b"", b"[" * 100_000],
    ids=["truncated", "trailing-comma", "not-utf8", "empty", "too-deep"],
)
def test_malformed_json_is_a_parse_error_with_a_null_id(server, body):
    error = null_id_error(server, frame(body))
    assert error["error"]["code"] == PARSE_ERROR and error["id"] is None and error["jsonrpc"] == "2.0"


@pytest.mark.parametrize("body", [b"[1, 2]", b"3", b'"text"', b"null", b"true", b"[]", b"{}"])
def test_json_that_is_not_a_message_is_an_invalid_request(server, body):
    assert null_id_error(server, frame(body))["error"]["code"] == INVALID_REQUEST


@pytest.mark.parametrize(
    "message",
    [
        {"id": "shape-1", "method": "x"},  # no jsonrpc
        {"jsonrpc": "1.0", "id": "shape-2", "method": "x"},
        {"jsonrpc": "2.0", "id": "shape-3"},  # no method, no result
        {"jsonrpc": "2.0", "id": "shape-4", "method": 42},
        {"jsonrpc": "2.0", "id": "shape-5", "method": "workspace/executeCommand", "params": STATUS, "result": 1},
    ],
)
def test_a_request_of_the_wrong_shape_is_an_invalid_request_with_its_id(server, message):
    server.send(message)
    answer = server.response(message["id"])
    assert code(answer) == INVALID_REQUEST
    time.sleep(0.1)
    assert len(server.responses(message["id"])) == 1


@pytest.mark.parametrize(
    "message",
    [
        {"jsonrpc": "2.0", "id": None, "method": "x"},
        {"jsonrpc": "2.0", "id": 1.5, "method": "x"},
        {"jsonrpc": "2.0", "id": True, "method": "x"},
        {"jsonrpc": "2.0", "id": [1], "method": "x"},
        {"jsonrpc": "2.0", "method": 1, "params": "bar"},  # the JSON-RPC 2.0 spec's own example
    ],
)
def test_an_id_that_cannot_be_read_is_answered_with_a_null_id(server, message):
    assert null_id_error(server, frame(json.dumps(message).encode()))["error"]["code"] == INVALID_REQUEST


# -- framing -------------------------------------------------------------------------------------------
def orphan(n: int) -> bytes:
    """A request the server must never see as one: its framing is broken."""
    return json.dumps({"jsonrpc": "2.0", "id": f"orphan-{n}", "method": "workspace/executeCommand", "params": STATUS}).encode()


@pytest.mark.parametrize(
    "data",
    [
        b"Content-Length: abc\r\n\r\n" + orphan(1),
        b"Content-Length: -5\r\n\r\n" + orphan(2),
        b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n" + orphan(3),  # no Content-Length
        b"Content-Length: 99999999999999999999\r\n\r\n" + orphan(4),  # over the limit
        frame(orphan(5), len(orphan(5)) - 3),  # too short: the rest runs on into the next header
    ],
    ids=["not-a-number", "negative", "missing", "huge", "short"],
)
def test_a_bad_content_length_is_a_parse_error_and_the_server_reads_on(server, data):
    error = null_id_error(server, data)
    assert error["error"]["code"] == PARSE_ERROR
    assert not any(str(m.get("id", "")).startswith("orphan-") for m in server.received)
    assert server.alive()


def test_headers_are_read_as_http_reads_them(server):
    body = json.dumps({"jsonrpc": "2.0", "id": "headers", "method": "workspace/executeCommand", "params": STATUS})
    server.write(b"\r\ncontent-length:  %d\r\nX-Other: 1\r\n\r\n%s" % (len(body), body.encode()))
    assert "result" in server.response("headers")


# -- methods -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method, params", [("foo/bar", {"a": 1}), ("foo/bar", None), ("$/foo", None), ("textDocument/hover", {})])
def test_an_unknown_method_is_method_not_found(server, method, params):
    message = {"jsonrpc": "2.0", "id": f"unknown-{method}-{params}", "method": method}
    if params is not None:
        message["params"] = params
    server.send(message)
    assert code(server.response(message["id"])) == METHOD_NOT_FOUND


def test_unknown_notifications_are_ignored(server):
    before = len(server.received)
    server.notify("foo/bar", {"a": 1})
    server.notify("$/foo", None)
    server.notify("$/cancelRequest", {"id": "never-sent"})
    status(server)
    assert [m for m in server.received[before:] if "method" not in m and m.get("id") is None] == []


def test_a_notification_sent_with_an_id_is_an_invalid_request(server):
    item = {"uri": new_uri(), "languageId": "python", "version": 1, "text": "x = 1\n"}
    answer = server.call("textDocument/didOpen", {"textDocument": item})
    assert code(answer) == INVALID_REQUEST


@pytest.mark.parametrize(
    "method, params",
    [
        ("textDocument/inlineCompletion", {"textDocument": {}}),
        ("textDocument/inlineCompletion", {"textDocument": {"uri": "file:///a.py"}, "position": {"line": "0"}}),
        ("textDocument/inlineCompletion", [1, 2]),
        ("workspace/executeCommand", {"command": 5}),
        ("workspace/executeCommand", {"command": "hindsight.accept", "arguments": [42]}),
        ("workspace/executeCommand", {"command": "hindsight.nope", "arguments": []}),
    ],
)
def test_params_that_fail_validation_are_invalid_params(server, method, params):
    assert code(server.call(method, params)) == INVALID_PARAMS


@pytest.mark.parametrize("line, character", [(0, -1), (-1, 0), (10_000, 0), (0, 10_000), (2**40, 0), (1, 6)])
def test_a_position_outside_the_document_is_invalid_params(server, line, character):
    uri = new_uri()
    server.open(uri, "x = 1\ny = 2")
    assert code(server.call("textDocument/inlineCompletion", completion_params(uri, line, character))) == INVALID_PARAMS


def test_a_position_inside_the_document_is_answered(server):
    uri = new_uri()
    server.open(uri, "x = 1\ny = 2")
    answer = server.call("textDocument/inlineCompletion", completion_params(uri, 1, 5))
    assert answer.get("result") is None and "error" not in answer  # null: no model here


def test_a_document_never_opened_is_invalid_params_and_its_file_is_not_read(server):
    on_disk = (WORKSPACE / "shapes" / "units.py").as_uri()  # a real file the client never opened
    # A change to it is ignored, not applied to the file as read from disk.
    server.notify(
        "textDocument/didChange",
        {"textDocument": {"uri": on_disk, "version": 2}, "contentChanges": [{"text": "x = 1\n"}]},
    )
    answer = server.call("textDocument/inlineCompletion", completion_params(on_disk))
    assert code(answer) == INVALID_PARAMS and "not open" in answer["error"]["message"]


def test_a_closed_document_is_no_longer_open(server):
    uri = new_uri()
    server.open(uri, "x = 1\n")
    assert "error" not in server.call("textDocument/inlineCompletion", completion_params(uri))
    server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    assert code(server.call("textDocument/inlineCompletion", completion_params(uri))) == INVALID_PARAMS


def test_a_uri_with_escapes_is_found_when_open(server):
    uri = new_uri("with space.py")
    assert "%20" in uri
    server.open(uri, "x = 1\n")
    answer = server.call("textDocument/inlineCompletion", completion_params(uri, 0, 5))
    assert "error" not in answer


def test_requests_after_shutdown_are_invalid_requests():
    s = RawServer()
    try:
        s.initialize(NO_MODEL)
        assert s.call("shutdown")["result"] is None
        assert code(s.call("workspace/executeCommand", STATUS)) == INVALID_REQUEST
        s.notify("exit")
        assert s.proc.wait(10) == 0
    finally:
        s.close()


# -- with the real model: requests that are cancelled or go stale while the model works ------------------


MODEL_S = 300  # seconds an answer from the model may take on a machine that is busy with other work


@pytest.fixture(scope="module")
def model_server():
    s = RawServer()
    s.initialize({"databasePath": str(TMP / "model.db"), "context": {"crossFile": False}})
    yield s
    assert not s.unframed, s.unframed
    s.close()


def open_long(server: RawServer) -> tuple[str, int, int]:
    """A new document, and the cursor at its end: its cold prompt (text no earlier prompt began with) keeps
    the model busy long enough to cancel the request or change the document under it."""
    uri = new_uri("long.py")
    name = f"value{_n}"
    last = f"{name}_80 = "
    server.open(uri, "\n".join(f"{name}_{i} = compute_something({i}, factor={i % 7})" for i in range(80)) + "\n" + last)
    return uri, 80, len(last)


@pytest.mark.slow
def test_a_cancelled_request_is_request_cancelled(model_server):
    uri, line, char = open_long(model_server)
    id = model_server.request("textDocument/inlineCompletion", completion_params(uri, line, char))
    time.sleep(0.05)
    model_server.notify("$/cancelRequest", {"id": id})
    assert code(model_server.response(id, timeout=MODEL_S)) == REQUEST_CANCELLED
    time.sleep(0.2)
    assert len(model_server.responses(id)) == 1


@pytest.mark.slow
def test_a_document_changed_while_the_model_works_is_content_modified(model_server):
    uri, line, char = open_long(model_server)
    id = model_server.request("textDocument/inlineCompletion", completion_params(uri, line, char))
    at = {"line": line, "character": char}
    model_server.notify(
        "textDocument/didChange",
        {"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"range": {"start": at, "end": at}, "text": "1"}]},
    )
    assert code(model_server.response(id, timeout=MODEL_S)) == CONTENT_MODIFIED
    # Asked again at the new text, it answers.
    answer = model_server.call("textDocument/inlineCompletion", completion_params(uri, line, char + 1), timeout=MODEL_S)
    assert "result" in answer


@pytest.mark.slow
def test_a_request_superseded_on_unchanged_text_is_answered_null(model_server):
    uri, line, char = open_long(model_server)
    first = model_server.request("textDocument/inlineCompletion", completion_params(uri, line, char))
    second = model_server.request("textDocument/inlineCompletion", completion_params(uri, line, char))
    assert model_server.response(first, timeout=MODEL_S) == {"jsonrpc": "2.0", "id": first, "result": None}
    assert "result" in model_server.response(second, timeout=MODEL_S)


def test_tcp_reads_the_same_way():
    """`hindsight serve --tcp`: the same message loop, over a socket."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "hindsight", "serve", "--tcp", str(port)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "the server did not listen"
                time.sleep(0.2)
        with sock, sock.makefile("rb") as stream:
            status = {"jsonrpc": "2.0", "id": "tcp", "method": "workspace/executeCommand", "params": STATUS}
            sock.sendall(frame(b'{"jsonrpc": ') + frame(json.dumps(status).encode()))
            answers = [read_framed(stream), read_framed(stream)]
        assert answers[0]["id"] is None and answers[0]["error"]["code"] == PARSE_ERROR
        assert answers[1]["id"] == "tcp" and "result" in answers[1]
    finally:
        proc.kill()
        proc.wait()


def read_framed(stream) -> dict:
    length = None
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return json.loads(stream.read(length))
