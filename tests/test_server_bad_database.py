"""A corrupt database: moved aside (kept, renamed), the user told once where, and a fresh one records the
session while completions go on."""

from __future__ import annotations


import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import LanguageClient

from conftest import WORKSPACE, initialize, rows, run_tmp, server_config

pytestmark = pytest.mark.slow

CORRUPT = run_tmp("hindsight-bad-db-") / "corrupt.db"
CONTENT = b"definitely not an SQLite database " * 200
CORRUPT.write_bytes(CONTENT)


@pytest_lsp.fixture(config=server_config())
async def client(lsp_client: LanguageClient):
    await initialize(lsp_client, {"databasePath": str(CORRUPT)})
    yield
    await lsp_client.shutdown_session()


async def test_corrupt_database_is_moved_aside_and_a_fresh_one_records(client: LanguageClient):
    source = (WORKSPACE / "shapes" / "geometry.py").read_text()
    lines = source.split("\n")
    line = next(i for i, l in enumerate(lines) if l.strip() == "return math.pi * r * r")
    lines[line] = "        return "
    uri = (WORKSPACE / "shapes" / "_corrupt_db.py").as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text="\n".join(lines))
        )
    )
    result = await client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=15),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
        )
    )
    assert result and result.items and result.items[0].insert_text.strip()
    (moved,) = CORRUPT.parent.glob("corrupt.db.corrupt-*")
    assert moved.read_bytes() == CONTENT  # renamed, not rewritten
    db_messages = [m for m in client.messages if "corrupt.db" in m.message]
    assert len(db_messages) == 1 and "\n" not in db_messages[0].message
    assert f"moved it to {moved} and started a fresh one" in db_messages[0].message
    # The fresh database records the session: the request, and its accept.
    await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="hindsight.accept", arguments=result.items[0].command.arguments)
    )
    request_id = result.items[0].command.arguments[0]["id"]
    assert [r["id"] for r in rows(CORRUPT, "SELECT id FROM requests WHERE decision = 'show'")] == [request_id]
    assert [r["kind"] for r in rows(CORRUPT, "SELECT kind FROM events WHERE request_id = ?", [request_id])] == ["accept"]
