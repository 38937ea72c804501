"""A bad model file: the user is told once, completions come back empty, the server stays up."""

from __future__ import annotations


import pytest_lsp
from lsprotocol import types
from pytest_lsp import LanguageClient

from conftest import WORKSPACE, initialize, run_tmp, server_config

BAD_MODEL = run_tmp("hindsight-bad-model-") / "broken.gguf"
BAD_MODEL.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 100)  # right magic, truncated header
DB = BAD_MODEL.parent / "bad-model.db"


@pytest_lsp.fixture(config=server_config())
async def client(lsp_client: LanguageClient):
    await initialize(lsp_client, {"model": str(BAD_MODEL), "databasePath": str(DB), "bogusOption": 1})
    yield
    await lsp_client.shutdown_session()


async def test_bad_model_is_reported_once_and_completions_are_empty(client: LanguageClient):
    uri = (WORKSPACE / "shapes" / "units.py").as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text="x = \n")
        )
    )
    for _ in range(3):
        result = await client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=0, character=4),
                context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
            )
        )
        assert not result or not result.items
    model_messages = [m for m in client.messages if "broken.gguf" in m.message]
    assert len(model_messages) == 1
    assert model_messages[0].type == types.MessageType.Error
    assert "\n" not in model_messages[0].message
    # The unknown option was reported too, and the server still answers commands.
    assert any("bogusOption" in m.message for m in client.messages)
    status = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="hindsight.status", arguments=[])
    )
    assert status["modelLoaded"] is False and "broken.gguf" in status["modelError"]
