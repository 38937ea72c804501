"""Fuzzing the protocol: random and mutated LSP traffic, sent as raw bytes to the real server process
(tests/raw_client.py). Whatever comes in, every request with a readable id gets exactly one answer, every
message that cannot be read gets exactly one `"id": null` error, a request whose framing is broken is
never run, no answer is an InternalError (a bug), and the server stays up.

Hypothesis runs derandomized (the same examples every run), so a failure reproduces as it is; it prints
the failing batch. The fast test runs without a model (a model path that does not exist: completions
answer null at once); the slow one sends a few batches through the real model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from conftest import WORKSPACE, run_tmp
from raw_client import RawServer, frame

PARSE_ERROR, INVALID_REQUEST, INTERNAL_ERROR = -32700, -32600, -32603
TMP = run_tmp("hindsight-fuzz-")
NO_MODEL = {"model": str(TMP / "no-model.gguf"), "databasePath": str(TMP / "fuzz.db"), "context": {"crossFile": False}}
WITH_MODEL = {"databasePath": str(TMP / "fuzz-model.db"), "context": {"crossFile": False}}
STATUS = {"command": "hindsight.status", "arguments": []}

OPEN = (TMP / "open.py").as_uri()  # opened afresh at the start of every batch, with OPEN_TEXT
OPEN_TEXT = "def area(width, height):\n    return width * height\n\n\nprint(area(2, 3))\n"
URIS = [
    OPEN,
    (TMP / "other file.py").as_uri(),  # a URI with escapes
    (WORKSPACE / "shapes" / "units.py").as_uri(),  # on disk, never opened by the client unless fuzzed to
    "file:///nonexistent/dir/x.js",
    "untitled:Untitled-1",
    "",
]


# -- what is sent --------------------------------------------------------------------------------------
@dataclass
class Item:
    """Bytes to send, and the answer they must bring: to `id` (a request), with `"id": null` (`null_codes`:
    a message that cannot be read), or none (a notification). `never` is the id of a request that cannot
    be read (broken JSON or framing): it must not be run, so not answered."""

    data: bytes
    id: int | str | None = None
    codes: frozenset[int] | None = None  # the answer to `id` must be an error with one of these codes
    null_codes: frozenset[int] | None = None
    never: int | str | None = None
    what: str = ""  # which kind of item: shown when a batch fails


_ids = iter(range(10**9, 2 * 10**9))  # unique across batches, and all of one width: what is drawn from a
# message's length (where to cut it) must not change from one run of an example to the next


def next_id(draw) -> int | str:
    n = next(_ids)
    return n if draw(st.booleans()) else f"fuzz-{n}"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
numbers = st.integers(-3, 12) | st.integers(-(2**40), 2**40) | st.sampled_from([2**31 - 1, 2**31, 2**32, 2**63])
uris = st.sampled_from(URIS) | st.text(max_size=20)
texts = st.text(max_size=80) | st.sampled_from(["", "\n", "x = 1\r\n", "é🙂\u0301中", "\ud7ff\ue000\ufeff"])


@st.composite
def position(draw):
    return {"line": draw(numbers), "character": draw(numbers)}


@st.composite
def mutated(draw, value):
    """`value` as it is, or with one part dropped or replaced by any JSON value, at any depth."""
    choice = draw(st.sampled_from(["same", "same", "drop", "replace"]))
    if choice == "same" or not isinstance(value, (dict, list)) or not value:
        return draw(json_values) if choice == "replace" else value
    keys = list(value) if isinstance(value, dict) else list(range(len(value)))
    key = draw(st.sampled_from(keys))
    copy = dict(value) if isinstance(value, dict) else list(value)
    if choice == "drop":
        del copy[key]
    else:
        copy[key] = draw(mutated(value[key]) | json_values)
    return copy


@st.composite
def request_params(draw) -> tuple[str, object]:
    """A method a client may call, and params that are right, or nearly right, or wrong."""
    kind = draw(st.sampled_from(["complete", "complete", "complete", "command", "unknown"]))
    if kind == "complete":
        params = {
            "textDocument": {"uri": draw(uris)},
            "position": draw(position()),
            "context": {"triggerKind": draw(st.sampled_from([1, 2, 0, 3, "1"]))},
        }
        return "textDocument/inlineCompletion", draw(mutated(params))
    if kind == "command":
        command = draw(st.sampled_from(["hindsight.status", "hindsight.accept", "hindsight.nope"]))
        arguments = draw(st.just([]) | st.lists(json_values, max_size=2) | st.builds(lambda t: [{"id": t}], st.text(max_size=10)))
        return "workspace/executeCommand", draw(mutated({"command": command, "arguments": arguments}))
    method = draw(st.sampled_from(["foo/bar", "$/foo", "textDocument/hover", "hindsight/didShow", "textDocument/didOpen"]))
    return method, draw(json_values)


@st.composite
def notification(draw, earlier_ids: list) -> dict:
    kind = draw(st.sampled_from(["open", "change", "change", "close", "cancel", "client", "unknown", "trace"]))
    if kind == "open":
        item = {"uri": draw(uris), "languageId": draw(st.sampled_from(["python", "javascript", "rust", "plaintext", ""])),
                "version": draw(numbers), "text": draw(texts)}
        method, params = "textDocument/didOpen", {"textDocument": item}
    elif kind == "change":
        change = st.builds(lambda t: {"text": t}, texts) | st.builds(
            lambda s, e, t: {"range": {"start": s, "end": e}, "text": t}, position(), position(), texts
        )
        params = {"textDocument": {"uri": draw(uris), "version": draw(numbers)}, "contentChanges": draw(st.lists(change, max_size=3))}
        method = "textDocument/didChange"
    elif kind == "close":
        method, params = "textDocument/didClose", {"textDocument": {"uri": draw(uris)}}
    elif kind == "cancel":
        method, params = "$/cancelRequest", {"id": draw(st.sampled_from(earlier_ids) if earlier_ids else json_values)}
    elif kind == "client":
        method = draw(st.sampled_from(["hindsight/didShow", "hindsight/didReject", "hindsight/didPartiallyAccept"]))
        params = {"id": draw(st.text(max_size=10)), "reason": draw(st.text(max_size=10)), "acceptedLength": draw(numbers)}
    elif kind == "unknown":
        method, params = draw(st.sampled_from(["foo/bar", "$/foo", "$/progress"])), draw(json_values)
    else:
        method, params = "$/setTrace", {"value": draw(st.sampled_from(["off", "messages", "verbose", "loud"]))}
    return {"jsonrpc": "2.0", "method": method, "params": draw(mutated(params))}


def body(message) -> bytes:
    return json.dumps(message).encode()


@st.composite
def item(draw, earlier_ids: list) -> Item:
    kind = draw(st.sampled_from(
        ["request"] * 6 + ["notification"] * 5 + ["bytes", "truncated", "not-an-object", "envelope", "framing"]
    ))
    if kind == "notification":
        return Item(frame(body(draw(notification(earlier_ids)))), what="notification")
    if kind == "bytes":
        return Item(frame(draw(st.binary(max_size=200))), null_codes=frozenset({PARSE_ERROR, INVALID_REQUEST}), what="bytes")
    if kind == "not-an-object":
        value = draw(json_values.filter(lambda v: not isinstance(v, dict)))
        return Item(frame(body(value)), null_codes=frozenset({INVALID_REQUEST}), what="not-an-object")

    method, params = draw(request_params())
    id = next_id(draw)
    message = {"jsonrpc": "2.0", "id": id, "method": method, "params": params}
    data = body(message)
    if kind == "request":
        earlier_ids.append(id)
        return Item(frame(data), id=id, what="request")
    if kind == "truncated":
        cut = draw(st.integers(0, len(data) - 1))
        return Item(frame(data[:cut]), null_codes=frozenset({PARSE_ERROR}), never=id, what="truncated")
    if kind == "envelope":
        change = draw(st.sampled_from(["no-jsonrpc", "jsonrpc", "bad-id", "method", "result"]))
        if change == "bad-id":
            message["id"] = draw(st.sampled_from([None, 1.5, True, [1], {"a": 1}]))
            return Item(frame(body(message)), null_codes=frozenset({INVALID_REQUEST}), never=id, what=change)
        if change == "no-jsonrpc":
            del message["jsonrpc"]
        elif change == "jsonrpc":
            message["jsonrpc"] = draw(st.sampled_from(["1.0", "2", 2.0, None]))
        elif change == "method":
            message["method"] = draw(json_values.filter(lambda v: not isinstance(v, str)))
        else:
            message["result"] = draw(json_values)
        return Item(frame(body(message)), id=id, codes=frozenset({INVALID_REQUEST}), what=change)
    # framing: headers that are wrong, or right in an unusual way
    change = draw(st.sampled_from(["not-a-number", "missing", "huge", "short", "lowercase", "extra-headers"]))
    if change == "lowercase":
        earlier_ids.append(id)
        return Item(b"content-length:%d\r\n\r\n" % len(data) + data, id=id, what=change)
    if change == "extra-headers":
        earlier_ids.append(id)
        return Item(b"\r\nX-Whatever: 1\r\n" + frame(data), id=id, what=change)
    header = {
        "not-a-number": b"Content-Length: %s\r\n\r\n" % draw(st.sampled_from([b"abc", b"-5", b"", b"1e3", b"0x10"])),
        "missing": b"Content-Type: application/vscode-jsonrpc\r\n\r\n",
        "huge": b"Content-Length: %d\r\n\r\n" % draw(st.integers(2**28 + 1, 2**70)),
        "short": b"Content-Length: %d\r\n\r\n" % draw(st.integers(0, len(data) - 1)),
    }[change]
    return Item(header + data, null_codes=frozenset({PARSE_ERROR}), never=id, what=change)


@st.composite
def batches(draw) -> list[Item]:
    earlier_ids: list = []
    opening = {"jsonrpc": "2.0", "method": "textDocument/didOpen",
               "params": {"textDocument": {"uri": OPEN, "languageId": "python", "version": 1, "text": OPEN_TEXT}}}
    items = [Item(frame(body(opening)), what="open")]
    for _ in range(draw(st.integers(1, 8))):
        items.append(draw(item(earlier_ids)))
    return items


# -- checking ------------------------------------------------------------------------------------------
class Servers:
    """The server the batches go to. One an example killed is replaced (and remembered), so that Hypothesis
    shrinks the failing batch against a live server."""

    def __init__(self, options: dict):
        self.options, self.server, self.deaths = options, None, []
        self.answered_once: list = []  # every id that must have exactly one answer when the run ends
        self.never: list = []

    def get(self) -> RawServer:
        if self.server is not None and not self.server.alive():
            self.deaths.append(self.server.log_tail())
            self.server.close()
            self.server = None
        if self.server is None:
            self.server = RawServer()
            self.server.initialize(self.options)
        return self.server

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def check_batch(servers: Servers, items: list[Item], timeout: float = 30.0) -> None:
    server = servers.get()
    nulls_before = len(server.null_id_errors())
    server.write(b"".join(i.data for i in items))
    # A request after the batch: once it is answered, every message before it has been read (and those that
    # could not be read answered: they are answered as they are read).
    last = server.request("workspace/executeCommand", STATUS)
    ids = [i.id for i in items if i.id is not None] + [last]
    assert server.wait(lambda _: all(server.responses(id) for id in ids), timeout), (
        f"unanswered: {[id for id in ids if not server.responses(id)]}; alive: {server.alive()}\n{server.log_tail()}"
    )
    for i in items:
        if i.id is not None:
            answers = server.responses(i.id)
            assert len(answers) == 1, (i, answers)
            answer = answers[0]
            assert ("result" in answer) != ("error" in answer), answer
            if i.codes is not None:
                assert "error" in answer and answer["error"]["code"] in i.codes, (i, answer)
            assert answer.get("error", {}).get("code") != INTERNAL_ERROR, (i, answer)
            servers.answered_once.append(i.id)
        if i.never is not None:
            assert server.responses(i.never) == [], (i, server.responses(i.never))
            servers.never.append(i.never)
    nulls = server.null_id_errors()[nulls_before:]
    expected = [i for i in items if i.null_codes is not None]
    assert len(nulls) == len(expected), (nulls, expected)
    for error, i in zip(nulls, expected):  # answered in the order they were sent
        assert error["error"]["code"] in i.null_codes, (error, i)
    assert server.alive()


def check_the_end(servers: Servers) -> None:
    """After all batches: the server is up and answers, nothing was answered twice, nothing broken was run."""
    server = servers.get()
    assert not servers.deaths, "an example stopped the server:\n" + "\n----\n".join(servers.deaths)
    answer = server.call("workspace/executeCommand", STATUS)
    assert "result" in answer and server.alive()
    for id in servers.answered_once:
        assert len(server.responses(id)) == 1, (id, server.responses(id))
    for id in servers.never:
        assert server.responses(id) == [], id
    assert not server.unframed, server.unframed  # nothing but framed JSON-RPC on stdout


FUZZ = settings(
    derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def test_every_request_gets_exactly_one_answer_and_the_server_stays_up():
    servers = Servers(NO_MODEL)

    @settings(FUZZ, max_examples=150)
    @given(batches())
    def run(items):
        check_batch(servers, items)

    try:
        run()
        check_the_end(servers)
    finally:
        servers.close()


@pytest.mark.slow
def test_with_the_real_model():
    """A few batches through the real model, each ending in a completion where the model has something
    to say; at most one full generation a batch (a newer request or an edit stops the others)."""
    servers = Servers(WITH_MODEL)
    at = {"line": 1, "character": len("    return ")}

    @settings(FUZZ, max_examples=2, phases=[Phase.generate])
    @given(batches())
    def run(items):
        id = f"model-{next(_ids)}"
        params = {"textDocument": {"uri": OPEN}, "position": at, "context": {"triggerKind": 1}}
        last = {"jsonrpc": "2.0", "id": id, "method": "textDocument/inlineCompletion", "params": params}
        check_batch(servers, items + [Item(frame(body(last)), id=id, what="complete")], timeout=300)

    try:
        run()
        check_the_end(servers)
        status = servers.get().call("workspace/executeCommand", STATUS)["result"]
        assert status["modelLoaded"] and status["modelError"] is None
    finally:
        servers.close()
