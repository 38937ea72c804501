"""Shared test set-up: one data directory per test run (the embedded model is assembled into it once)."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import sqlite3
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = ROOT / "tests" / "workspace"


def run_tmp(prefix: str) -> Path:
    """A temporary directory removed when the test run ends: for what exists before any test's tmp_path
    (the data dir below; the databases of modules whose pytest-lsp servers are configured at import)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


# Every server and CLI the tests start uses this data dir unless a test says otherwise. One made here
# (it holds a copy of the model, ~240 MB) is removed when the test run ends.
if "HINDSIGHT_DATA_DIR" not in os.environ:
    os.environ["HINDSIGHT_DATA_DIR"] = str(run_tmp("hindsight-test-data-"))
DATA_DIR = Path(os.environ["HINDSIGHT_DATA_DIR"])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released) for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rows(db: Path, sql: str, params=()) -> list[dict]:
    """Read the server's database directly, as a user would with sqlite3."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def server_config():
    """pytest-lsp: the real server, `hindsight serve` over stdio, in its own process."""
    from pytest_lsp import ClientServerConfig

    return ClientServerConfig(server_command=[sys.executable, "-m", "hindsight", "serve"])


async def initialize(lsp_client, options: dict):
    """The initialize handshake a client makes, with `options` as initializationOptions."""
    from lsprotocol import types

    return await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(),
            root_uri=WORKSPACE.as_uri(),
            initialization_options=options,
        )
    )


_versions: dict[str, int] = {}  # uri → the last version sent (documents open at version 1)


def edit(client, uri: str, line: int, char: int, text: str, end: tuple[int, int] | None = None):
    """didChange: replace [(line, char), end) (an insertion when `end` is None) with `text`."""
    from lsprotocol import types

    _versions[uri] = _versions.get(uri, 1) + 1
    end_line, end_char = end or (line, char)
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=_versions[uri]),
            content_changes=[
                types.TextDocumentContentChangePartial(
                    range=types.Range(
                        start=types.Position(line=line, character=char),
                        end=types.Position(line=end_line, character=end_char),
                    ),
                    text=text,
                )
            ],
        )
    )


@contextlib.asynccontextmanager
async def serving(options: dict, env: dict | None = None):
    """A real server (`hindsight serve`, its own process) initialized with `options` and no workspace:
    for tests of what it records rather than of what it completes (give it a missing model file and it
    starts in a second, completions off). `env` replaces the server's environment when given."""
    from lsprotocol import types
    from pytest_lsp import ClientServerConfig

    config = ClientServerConfig(server_command=[sys.executable, "-m", "hindsight", "serve"], server_env=env)
    client = await config.start()
    try:
        await client.initialize_session(
            types.InitializeParams(capabilities=types.ClientCapabilities(), initialization_options=options)
        )
        yield client
        await client.shutdown_session()
    finally:
        server = client._server
        if server is not None and server.returncode is None:
            server.kill()  # a test that failed midway: no shutdown is coming, and stop() would wait for one
        await client.stop()
