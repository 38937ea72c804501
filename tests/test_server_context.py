"""Cross-file context through the real server: the workspace index is built in the background (with
$/progress), the definition a completion needs from another file is in the prompt that was recorded,
and an edit to that other file changes the context of the next request."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import LanguageClient

from conftest import WORKSPACE, edit, rows, run_tmp, server_config

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

TMP = run_tmp("hindsight-context-")
ROOT = TMP / "ws"
shutil.copytree(WORKSPACE, ROOT)
DB = TMP / "context.db"


@pytest_lsp.fixture(scope="module", config=server_config())
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(window=types.WindowClientCapabilities(work_done_progress=True)),
            root_uri=ROOT.as_uri(),
            initialization_options={"databasePath": str(DB)},
        )
    )
    yield
    await lsp_client.shutdown_session()


async def status(client) -> dict:
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command="hindsight.status"))


async def indexed(client) -> dict:
    for _ in range(200):
        state = await status(client)
        if state["index"]:
            return state["index"]
        await asyncio.sleep(0.1)
    raise AssertionError("the index was not built")


def open_file(client, rel: str, text: str | None = None, language: str = "python") -> str:
    uri = (ROOT / rel).as_uri()
    text = (ROOT / rel).read_text() if text is None else text
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(uri=uri, language_id=language, version=1, text=text))
    )
    return uri


async def complete_at(client, uri: str, line: int, character: int) -> list[dict]:
    """Ask once; returns the recorded context of that request."""
    before = {r["id"] for r in rows(DB, "SELECT id FROM requests")} if DB.exists() else set()
    await client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=character),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
        )
    )
    for _ in range(50):
        new = [r for r in rows(DB, "SELECT id, context_json FROM requests ORDER BY created_at") if r["id"] not in before]
        if new:
            return json.loads(new[-1]["context_json"] or "[]")
        await asyncio.sleep(0.1)
    raise AssertionError("no request recorded")


async def test_index_builds_with_progress(client: LanguageClient):
    index = await indexed(client)
    assert index["files"] == 5 and index["chunks"] > 5
    for _ in range(50):
        kinds = [value.kind for value in client.progress_reports.get("hindsight-index", [])]
        if kinds and kinds[-1] == "end":
            break
        await asyncio.sleep(0.1)
    assert kinds[0] == "begin" and kinds[-1] == "end" and set(kinds[1:-1]) <= {"report"}


async def test_the_imported_definition_is_in_the_prompt_and_follows_edits_to_its_file(client: LanguageClient):
    await indexed(client)
    source = (ROOT / "shapes/geometry.py").read_text()
    line = source.split("\n").index("        return to_meters(self.width) * to_meters(self.height)")
    text = "\n".join(source.split("\n")[:line] + ["        return to_"])
    uri = open_file(client, "shapes/geometry.py", text)
    context = await complete_at(client, uri, line, len("        return to_"))
    graph = [s for s in context if s["origin"] == "graph"]
    assert any(s["source"].startswith("shapes/units.py:") and "def to_meters" in s["text"] for s in graph), context

    # The other file is edited (not saved): the next request's context has the new text.
    units = (ROOT / "shapes/units.py").read_text()
    units_uri = open_file(client, "shapes/units.py", units)
    at = units.split("\n").index("    return length.value * FACTORS[length.unit]")
    edit(client, units_uri, at, 0, "    # meters, whatever unit the length was given in\n")
    # A different line (the same text would come from the typed-ahead cache, with no prompt).
    edit(client, uri, line, 0, "        r = to_", end=(line, 18))
    context = await complete_at(client, uri, line, len("        r = to_"))
    assert any("whatever unit" in s["text"] for s in context if s["source"].startswith("shapes/units.py")), context
