"""The server and what runs beside it: `hindsight serve`, `complete` and `index`."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import click
from rich.progress import Progress

from hindsight.cli.common import command, json_option, model_option, server_options
from hindsight.cli.output import print_result
from hindsight.engine.engine import Engine
from hindsight.engine.backend import BackendError
from hindsight.engine.llama_backend import LlamaBackend
from hindsight.engine.model import resolve_model
from hindsight.engine.profiles import ProfileError, from_template
from hindsight.engine.servers import connect
from hindsight.errors import UsageError
from hindsight.lsp.server import server
from hindsight.paths import data_dir
from hindsight.request import CompletionRequest
from hindsight.retrieval.workspace import WorkspaceIndex
from hindsight.syntax import language_for

MAX_SOURCE_BYTES = 2_000_000  # `complete` refuses larger files: they are not source a person types in


@command("serve")
@click.option("--tcp", type=int, metavar="PORT", help="listen on 127.0.0.1:PORT instead of stdio")
@model_option
def serve(tcp: int | None, model: str | None) -> None:
    server.pipeline.model_override = model
    if tcp:
        server.start_tcp("127.0.0.1", tcp)
        return
    # The protocol gets its own copy of stdout, and fd 1 is pointed at stderr: nothing but protocol may
    # reach the client. (llama-cpp-python redirects fd 1 to /dev/null while it loads a model, from the
    # model thread; a response written meanwhile would be lost.)
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    server.start_io(sys.stdin.buffer, protocol_out)


def parse_location(spec: str) -> tuple[Path, int, int]:
    """FILE:LINE:COL (1-based) → the file and the 0-based line and column."""
    try:
        file, line, col = spec.rsplit(":", 2)
        line_no, col_no = int(line), int(col)
    except ValueError:
        raise UsageError(f"expected FILE:LINE:COL (1-based), got {spec!r}") from None
    path = Path(file)
    if not path.is_file():
        raise UsageError(f"no such file: {file}")
    if line_no < 1 or col_no < 1:
        raise UsageError("LINE and COL are 1-based")
    return path, line_no - 1, col_no - 1


def read_source(path: Path, max_bytes: int = MAX_SOURCE_BYTES) -> str:
    data = path.read_bytes()
    if len(data) > max_bytes:
        raise UsageError(f"{path} is too large to complete in ({len(data)} bytes > {max_bytes})")
    if b"\0" in data[:8192]:
        raise UsageError(f"{path} looks like a binary file")
    return data.decode("utf-8", errors="replace")


@command("complete")
@click.argument("location")
@json_option
@model_option
@server_options
def complete(location: str, as_json: bool, model: str | None, backend: str, base_url: str,
             model_name: str | None, template: str | None) -> None:
    path, line, col = parse_location(location)
    text = read_source(path)
    lines = text.split("\n")
    if line >= len(lines):
        raise UsageError(f"{path} has {len(lines)} lines; line {line + 1} is past the end")
    if col > len(lines[line]):
        raise UsageError(f"line {line + 1} has {len(lines[line])} characters; column {col + 1} is past its end + 1")
    try:
        profile = from_template(template)
    except ProfileError as exc:
        raise UsageError(str(exc)) from None
    if backend == "embedded":
        engine = Engine(LlamaBackend(resolve_model(model), profile=profile))
    else:
        try:
            engine = Engine(connect(backend, base_url, model=model_name, profile=profile))
        except BackendError as exc:
            raise UsageError(str(exc)) from None
    req = CompletionRequest(
        uri=path.resolve().as_uri(),
        text=text,
        line=line,
        character=col,
        language=language_for(str(path)),
        path=path.name,
        request_id=uuid.uuid4().hex[:16],
    )
    result = engine.complete(req)
    timings = {k: round(v, 2) for k, v in result.timings_ms.items()}
    if as_json:
        print(json.dumps({
            "id": req.request_id,
            "text": result.text,
            "timings_ms": timings,
            "profile": engine.profile.describe(),
            # Exactly what the model was given: the prompt as a model server laid it out (llama-server's
            # /infill), else as hindsight did; and for a model server, the request as it was sent.
            "prompt": getattr(engine.backend, "last_prompt", None) or (result.prompt.text if result.prompt else None),
            "request": dict(zip(("path", "body"), engine.backend.last_request))
            if getattr(engine.backend, "last_request", None) else None,
        }))
    else:
        print(result.text)
        print("  ".join(f"{k}={v:.1f}" for k, v in timings.items()), file=sys.stderr)


@command("index")
@click.argument("path", default=".")
@json_option
def index(path: str, as_json: bool) -> None:
    workspace = WorkspaceIndex(path, cache_dir=data_dir() / "index")
    with Progress(transient=True) as progress:
        task = progress.add_task("indexing", total=None)
        stats = workspace.build(lambda done, total: progress.update(task, completed=done, total=total))
    print_result({
        "root": str(workspace.root),
        "files": stats.files,
        "lines": stats.lines,
        "chunks": stats.chunks,
        "definitions": sum(len(info.definitions) for info in workspace.files.values()),
        "parsed": stats.parsed,
        "skipped": stats.skipped,
        "seconds": round(stats.seconds, 2),
    }, as_json)
