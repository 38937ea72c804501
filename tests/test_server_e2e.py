"""End to end: the real server process over LSP (pytest-lsp), the real embedded model, a real database.

Each test opens its own document, so one server serves the whole module.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pytest_lsp import LanguageClient

from hindsight.collector.store import Store

from conftest import WORKSPACE, edit, initialize, rows, run_tmp, server_config

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

DB = run_tmp("hindsight-e2e-") / "e2e.db"
# Cross-file context off: these tests are about the protocol, at positions picked for this model without
# context (tests/test_server_context.py covers the context).
OPTIONS = {"databasePath": str(DB), "persistenceDelaysS": [1.0, 2.0], "context": {"crossFile": False}}
GEOMETRY = WORKSPACE / "shapes" / "geometry.py"


@pytest_lsp.fixture(scope="module", config=server_config())
async def client(lsp_client: LanguageClient):
    result = await initialize(lsp_client, OPTIONS)
    lsp_client.init_result = result
    yield
    await lsp_client.shutdown_session()


_n = 0


def open_doc(client: LanguageClient, text: str, name: str = "geometry.py", language: str = "python") -> str:
    """Open `text` as a new document (a fresh URI per call) and return its URI."""
    global _n
    _n += 1
    uri = (WORKSPACE / "shapes" / f"_{_n}_{name}").as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id=language, version=1, text=text)
        )
    )
    return uri


async def complete(
    client: LanguageClient, uri: str, line: int, char: int, kind=types.InlineCompletionTriggerKind.Automatic
):
    result = await client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=char),
            context=types.InlineCompletionContext(trigger_kind=kind),
        )
    )
    return result.items if result else []


def item_id(item: types.InlineCompletionItem) -> str:
    arg = item.command.arguments[0]
    return arg["id"] if isinstance(arg, dict) else arg.id


def request_row(rid: str) -> dict:
    (row,) = rows(DB, "select * from requests where id = ?", (rid,))
    return row


def send_raw_request(client: LanguageClient, method: str, params: dict):
    """Send params as raw JSON, past the client's own type checks (to send what a buggy client would)."""
    global _n
    _n += 1
    msg_id = f"raw-{_n}"
    future = concurrent.futures.Future()
    client.protocol._request_futures[msg_id] = future
    client.protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
    return asyncio.wrap_future(future)


async def eventually(check, timeout: float = 10.0):
    """Poll the database until `check()` is truthy (the server writes after it answers)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


# A document where the model has a confident next line: the cursor ends `        return ` in area().
SOURCE = GEOMETRY.read_text()
LINES = SOURCE.split("\n")
AREA_LINE = next(i for i, l in enumerate(LINES) if "return to_meters(self.width) * to_meters(self.height)" in l)


def doc_with_cursor(line: int, prefix: str) -> tuple[str, int, int]:
    lines = list(LINES)
    lines[line] = prefix
    return "\n".join(lines), line, len(prefix)


async def get_suggestion(client, prefix: str = "        return ") -> tuple[str, int, int, types.InlineCompletionItem]:
    text, line, char = doc_with_cursor(AREA_LINE, prefix)
    uri = open_doc(client, text)
    items = await complete(client, uri, line, char)
    assert items, "the model should suggest something for a return statement"
    return uri, line, char, items[0]


async def test_advertises_inline_completion_and_commands(client: LanguageClient):
    caps = client.init_result.capabilities
    assert caps.inline_completion_provider
    assert set(caps.execute_command_provider.commands) >= {"hindsight.accept", "hindsight.status", "hindsight.reload"}
    assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental


async def test_completion_at_the_cursor_is_recorded(client: LanguageClient):
    uri, line, char, item = await get_suggestion(client)
    assert item.insert_text.strip()
    assert "\n" not in item.insert_text  # the line has a statement in progress: single line
    assert item.range is None  # inserted at the cursor
    assert item.command.command == "hindsight.accept"
    row = request_row(item_id(item))
    assert row["decision"] == "show" and row["completion"] == item.insert_text
    assert row["prefix"].endswith("        return ") and row["prompt"].endswith("        return ")
    timings = json.loads(row["timings_json"])
    assert {"prefill_ms", "generate_ms", "total_ms", "queue_ms"} <= set(timings)
    assert row["n_tokens"] >= 1 and row["logprob_mean"] <= 0
    assert row["prompt_tokens"] > 0 and 0 <= row["reused_tokens"] <= row["prompt_tokens"]


async def test_multi_line_where_a_block_opens(client: LanguageClient):
    text = "import math\n\n\ndef circle_area(radius):\n    \n"
    uri = open_doc(client, text)
    items = await complete(client, uri, 4, 4)
    assert items
    row = request_row(item_id(items[0]))
    assert row["mode"] == "multi"


async def test_accept_then_persistence(client: LanguageClient):
    uri, line, char, item = await get_suggestion(client)
    edit(client, uri, line, char, item.insert_text)  # the client inserts the text, then runs the command
    await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=item.command.command, arguments=item.command.arguments)
    )
    rid = item_id(item)
    assert (await eventually(lambda: request_row(rid)["outcome"])) == "accepted"
    # Persistence at the (test-shortened) delays: untouched text is still all there.
    assert await eventually(lambda: request_row(rid)["persist_120s"] is not None, timeout=15)
    row = request_row(rid)
    assert row["persist_30s"] == pytest.approx(1.0) and row["persist_120s"] == pytest.approx(1.0)


async def test_accepted_text_that_is_rewritten_does_not_persist(client: LanguageClient):
    uri, line, char, item = await get_suggestion(client)
    edit(client, uri, line, char, item.insert_text)
    await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=item.command.command, arguments=item.command.arguments)
    )
    # The user deletes what was accepted and writes something else.
    edit(client, uri, line, char, "0.0", end=(line, char + len(item.insert_text)))
    rid = item_id(item)
    assert await eventually(lambda: request_row(rid)["persist_120s"] is not None, timeout=15)
    assert request_row(rid)["persist_120s"] < 0.5


async def test_partial_accept(client: LanguageClient):
    uri, line, char, item = await get_suggestion(client)
    first_word = item.insert_text.split()[0]
    edit(client, uri, line, char, first_word)
    client.protocol.notify("hindsight/didPartiallyAccept", {"id": item_id(item), "acceptedLength": len(first_word)})
    rid = item_id(item)
    assert (await eventually(lambda: request_row(rid)["outcome"])) == "partial"
    assert request_row(rid)["accepted_length"] == len(first_word)


async def test_explicit_reject_and_what_the_user_wrote_instead(client: LanguageClient):
    uri, line, char, item = await get_suggestion(client)
    rid = item_id(item)
    client.protocol.notify("hindsight/didShow", {"id": rid})
    client.protocol.notify("hindsight/didReject", {"id": rid, "reason": "dismissed"})
    assert (await eventually(lambda: request_row(rid)["outcome"])) == "rejected"
    assert request_row(rid)["outcome_reason"] == "dismissed"
    assert request_row(rid)["shown_at"] is not None
    # The user writes their own line, then leaves it (an edit on another line).
    edit(client, uri, line, char, "0.0  # zero-area shape")
    assert request_row(rid)["actual_text"] is None  # still on the line
    edit(client, uri, line + 2, 0, "\n")
    assert (await eventually(lambda: request_row(rid)["actual_text"])) == "0.0  # zero-area shape"


async def complete_selected(client: LanguageClient, typed: str, selected: str):
    """A request with VS Code's suggest widget open: `typed` written at the area line's indent, `selected` the
    widget's selected item (LSP 3.18 selectedCompletionInfo: its range is the word typed so far)."""
    text, line, char = doc_with_cursor(AREA_LINE, "        " + typed)
    uri = open_doc(client, text)
    word = types.Range(start=types.Position(line=line, character=8), end=types.Position(line=line, character=char))
    result = await client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=char),
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Automatic,
                selected_completion_info=types.SelectedCompletionInfo(range=word, text=selected),
            ),
        )
    )
    assert result and result.items, "the model should continue a return statement"
    return uri, word, result.items[0]


async def test_a_suggestion_continues_the_suggest_widgets_selected_item(client: LanguageClient):
    uri, word, item = await complete_selected(client, "ret", "return")
    # Drawn over the typed word from its start, beginning with the selected item, as VS Code requires for
    # ghost text beside the widget; the log has the model's part, after the prompt with the item written.
    assert item.range == word and item.insert_text.startswith("return") and len(item.insert_text) > len("return")
    rid = item_id(item)
    row = request_row(rid)
    assert row["prefix"].endswith("        return") and row["completion"] == item.insert_text[len("return"):]
    # Accepting it (the client replaces the typed word with the item) and partial accepts count in that part.
    client.protocol.notify("hindsight/didPartiallyAccept", {"id": rid, "acceptedLength": len("return") + 1})
    assert (await eventually(lambda: request_row(rid)["outcome"])) == "partial"
    assert request_row(rid)["accepted_length"] == 1
    edit(client, uri, word.start.line, 8, item.insert_text, end=(word.end.line, word.end.character))
    await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=item.command.command, arguments=item.command.arguments)
    )
    assert (await eventually(lambda: request_row(rid)["outcome"] == "accepted"))
    assert request_row(rid)["outcome_reason"] == "command"


async def test_what_was_written_instead_of_a_suggestion_that_continued_a_selected_item(client: LanguageClient):
    uri, word, item = await complete_selected(client, "re", "return")
    rid = item_id(item)
    client.protocol.notify("hindsight/didReject", {"id": rid, "reason": "dismissed"})
    assert (await eventually(lambda: request_row(rid)["outcome"])) == "rejected"
    # The user writes the item and their own expression, then leaves the line: the log keeps what follows
    # the item (the logged prompt ends with it).
    edit(client, uri, word.start.line, word.end.character, "turn 0.0")
    edit(client, uri, word.start.line + 2, 0, "\n")
    assert (await eventually(lambda: request_row(rid)["actual_text"])) == " 0.0"


async def test_typing_over_a_suggestion_rejects_it(client: LanguageClient):
    uri, line, char, item = await get_suggestion(client)
    rid = item_id(item)
    other = "~" if not item.insert_text.startswith("~") else "!"
    edit(client, uri, line, char, other)
    assert (await eventually(lambda: request_row(rid)["outcome"])) == "rejected"
    assert request_row(rid)["outcome_reason"] == "typed_over"


async def test_typed_ahead_is_served_from_the_cache(client: LanguageClient):
    uri, line, char, item = await get_suggestion(client)
    first = item.insert_text[0]
    edit(client, uri, line, char, first)
    items = await complete(client, uri, line, char + 1)
    assert items and items[0].insert_text == item.insert_text[1:]
    child = request_row(item_id(items[0]))
    assert child["source"] == "typed_ahead" and child["parent_id"] == item_id(item)
    assert (await eventually(lambda: request_row(item_id(item))["outcome"])) == "continued"


async def test_a_new_request_elsewhere_supersedes_the_shown_one(client: LanguageClient):
    uri, line, char, item = await get_suggestion(client)
    await complete(client, uri, line - 1, 0)
    rid = item_id(item)
    assert (await eventually(lambda: request_row(rid)["outcome"])) == "rejected"
    assert request_row(rid)["outcome_reason"] == "superseded"


async def test_cancel_request(client: LanguageClient):
    # A cold prompt on a long new document keeps the model busy long enough to cancel.
    text = "\n".join(f"value_{i} = compute_something({i}, factor={i % 7})" for i in range(400)) + "\nvalue_400 = "
    uri = open_doc(client, text, "long.py")
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=400, character=12),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
    )
    future = asyncio.ensure_future(
        client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id="cancel-me")
    )
    await asyncio.sleep(0.2)
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="cancel-me"))
    with pytest.raises(Exception) as info:
        await asyncio.wait_for(future, 30)
    assert "cancel" in str(info.value).lower()
    # The server is still serving.
    _, _, _, item = await get_suggestion(client)
    assert item.insert_text


async def test_newest_request_wins(client: LanguageClient):
    text = "\n".join(f"item_{i} = make_item({i}, size={i % 5})" for i in range(400)) + "\nitem_400 = "
    uri = open_doc(client, text, "newest.py")
    first = asyncio.ensure_future(complete(client, uri, 400, 11))
    await asyncio.sleep(0.05)
    second = await complete(client, uri, 400, 11)
    assert await first == []  # superseded while the model was still reading the prompt
    assert second


@pytest.mark.parametrize(
    "position",
    [{"line": 0, "character": -1}, {"line": 10_000, "character": 0}, {"line": 0, "character": 10_000}],
)
async def test_bad_position_gets_invalid_params_and_the_server_keeps_serving(client: LanguageClient, position):
    uri = open_doc(client, "x = 1\n")
    params = {"textDocument": {"uri": uri}, "position": position, "context": {"triggerKind": 1}}
    with pytest.raises(JsonRpcException) as info:
        await asyncio.wait_for(send_raw_request(client, types.TEXT_DOCUMENT_INLINE_COMPLETION, params), 10)
    assert info.value.code == JsonRpcInvalidParams.CODE
    _, _, _, item = await get_suggestion(client)
    assert item.insert_text


async def test_status_command(client: LanguageClient):
    status = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="hindsight.status", arguments=[])
    )
    assert status["modelLoaded"] is True
    assert status["stats"]["requests"] >= 1
    assert status["database"] == str(DB)


async def test_status_tells_the_last_learning_run(client: LanguageClient):
    with Store(DB) as store:  # as `hindsight learn` records a run, beside the running server
        store.add_learning_run({"started_at": time.time() - 5, "ended_at": time.time(), "status": "done",
                                "promoted": [{"step": "gate", "version": "gate-1"}], "reason": "gate: promoted"})
    status = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="hindsight.status", arguments=[])
    )
    assert status["lastLearning"]["status"] == "done"
    assert status["lastLearning"]["promoted"] == [{"step": "gate", "version": "gate-1"}]


async def test_reload_loads_the_model_again_and_keeps_serving(client: LanguageClient):
    status = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="hindsight.reload", arguments=[])
    )
    assert status["modelLoaded"] is True and status["modelError"] is None
    _, _, _, item = await get_suggestion(client)
    assert item.insert_text


async def test_asking_gives_alternatives_and_cycling_past_them_rejects_them_when_one_is_accepted(client):
    text, line, char = doc_with_cursor(AREA_LINE, "        return ")
    uri = open_doc(client, text)
    typing = await complete(client, uri, line, char)
    assert len(typing) == 1  # while typing: one suggestion, no extra cost
    items = await complete(client, uri, line, char, kind=types.InlineCompletionTriggerKind.Invoked)
    assert len(items) == 3 and len({i.insert_text for i in items}) == 3
    first, second, third = (item_id(i) for i in items)
    assert items[0].insert_text == typing[0].insert_text  # the first is what typing would have shown
    alternatives = rows(DB, "SELECT * FROM requests WHERE alternative_of = ? ORDER BY created_at", [first])
    assert [(r["id"], r["decision"]) for r in alternatives] == [(second, "alternative"), (third, "alternative")]

    client.protocol.notify("hindsight/didShow", {"id": first})
    client.protocol.notify("hindsight/didShow", {"id": second})  # the user cycled to the second
    await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="hindsight.accept", arguments=[{"id": second}])
    )
    assert (await eventually(lambda: request_row(second)["outcome"])) == "accepted"
    assert request_row(first)["outcome"] == "rejected" and request_row(first)["outcome_reason"] == "cycled"
    assert request_row(third)["outcome"] is None and request_row(third)["shown_at"] is None  # never seen
