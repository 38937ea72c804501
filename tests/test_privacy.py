"""Privacy: no network at run time, private files, secrets redacted before anything is stored.

One real server session (a user's first: a fresh data directory, the embedded model assembled into it,
stdio, a workspace, a completion through the model, `hindsight.status`, shutdown) runs with a clean
environment and a umask of 022, under `strace` inside a network namespace of its own (`unshare -n`) when
both are there. Its system calls show whether anything tried to reach the network; its files show their
modes. The redaction tests run `hindsight.redact` on the corpus of hindsight/evaluation/redact_corpus.py, the
numbers `hindsight bench redact` reports.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from lsprotocol import types

from hindsight.redact import redact
from conftest import WORKSPACE
from hindsight.evaluation.bench_redact import false_positives, recall
from hindsight.evaluation.redact_corpus import positives

# Measured (docs/BENCHMARKS.md, "Redaction"): 0.12 lines per 10k over 1.56M lines, 0.24 in the worst set.
FP_PER_10K_MAX = 0.5
FP_PER_10K_MAX_PER_SET = 1.0
VARIANTS = 30  # fillings of each template: 30 × 126 templates

GEOMETRY = WORKSPACE / "shapes" / "geometry.py"
# Third-party libraries that talk HTTP or to the Hugging Face hub: the server has no use for any of them.
NETWORK_LIBRARIES = ("huggingface_hub", "requests", "urllib3", "httpx", "aiohttp")


# Redaction --------------------------------------------------------------------------------------------


def test_every_secret_in_the_corpus_is_redacted_and_the_code_around_it_kept():
    result = recall(seed=0, variants=VARIANTS)
    assert result["cases"] >= 80 * VARIANTS // 3
    assert not result["missed"], "\n".join(f"{c['kind']}: {c['text']!r} -> {c['redacted']!r}" for c in result["missed"][:5])
    assert not result["mangled"], "\n".join(f"{c['kind']}: lost {c['lost']}" for c in result["mangled"][:5])
    assert result["recall"] == 1.0


def test_redacting_the_corpus_twice_changes_nothing_more():
    for case in positives(seed=1, variants=1):
        once = redact(case.text)
        assert redact(once) == once, case.text


def test_false_positives_on_ordinary_code_stay_rare():
    result = false_positives()
    sets = result["sets"]
    if not sets["npm-js"]["files"]:
        pytest.skip("editors/vscode/node_modules is not installed (npm ci): only the standard library to measure on")
    lines = sum(s["lines"] for s in sets.values())
    changed = sum(s["lines_changed"] for s in sets.values())
    assert lines > 1_000_000
    shown = "\n".join(f"{h['file']}:{h['line']}: {h['before'].strip()[:120]}" for h in result["hits"][:20])
    assert changed / lines * 10_000 < FP_PER_10K_MAX, shown
    for name, s in sets.items():
        assert s["per_10k_lines"] < FP_PER_10K_MAX_PER_SET, (name, shown)


def test_the_log_file_is_created_private_and_an_existing_one_narrowed(tmp_path):
    from hindsight.cli.common import private_log

    new, old = tmp_path / "new.log", tmp_path / "old.log"
    old.write_text("from before\n")
    old.chmod(0o644)
    umask = os.umask(0o022)
    try:
        handlers = [private_log(str(new)), private_log(str(old))]
    finally:
        os.umask(umask)
    for handler in handlers:
        handler.close()
    assert stat.S_IMODE(new.stat().st_mode) == 0o600
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    assert old.read_text() == "from before\n"  # appended to, not truncated


# One real session ---------------------------------------------------------------------------------------


def _traceable() -> str | None:
    """Why the session cannot run under strace in a network namespace of its own, or None if it can."""
    for tool in ("strace", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(["unshare", "-n", "strace", "-f", "-qq", "-o", os.devnull, "true"], capture_output=True)
    if probe.returncode != 0:
        return f"`unshare -n strace true` failed (not root, or ptrace denied): {probe.stderr.decode().strip()[:200]}"
    return None


@dataclass
class Session:
    data_dir: Path
    log: Path
    trace: Path | None  # strace's output, when it ran under strace
    untraced_because: str | None
    items: list[str]
    status: dict


async def _drive(command: list[str], env: dict[str, str]) -> tuple[list[str], dict]:
    from pytest_lsp.client import make_test_lsp_client

    client = make_test_lsp_client()
    await client.start_io(*command, env=env)
    try:
        await client.initialize_session(
            types.InitializeParams(capabilities=types.ClientCapabilities(), root_uri=WORKSPACE.as_uri())
        )
        # The model has a confident next line where `        return ` ends Rectangle.area().
        lines = GEOMETRY.read_text().split("\n")
        line = next(i for i, text in enumerate(lines) if "return to_meters(self.width) * to_meters(self.height)" in text)
        lines[line] = "        return "
        uri = (GEOMETRY.parent / "_privacy_geometry.py").as_uri()
        client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text="\n".join(lines))
            )
        )
        result = await asyncio.wait_for(
            client.text_document_inline_completion_async(
                types.InlineCompletionParams(
                    text_document=types.TextDocumentIdentifier(uri=uri),
                    position=types.Position(line=line, character=len(lines[line])),
                    context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
                )
            ),
            timeout=300,
        )
        status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="hindsight.status"))
    finally:
        await client.shutdown_session()
    return [item.insert_text for item in (result.items if result else [])], status


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    work = tmp_path_factory.mktemp("privacy")
    data_dir, log, home = work / "data", work / "server.log", work / "home"  # data_dir: the server makes it
    home.mkdir()
    server = [sys.executable, "-m", "hindsight", "-v", "--log-file", str(log), "serve"]
    untraced_because = _traceable()
    trace = None
    if untraced_because is None:
        trace = work / "strace.txt"
        # --seccomp-bpf: only the traced calls stop the process (llama.cpp's threads would crawl otherwise).
        server = ["unshare", "-n", "strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=%network,execve,openat",
                  "-o", str(trace), *server]  # fmt: skip
    # A clean environment: no proxy, no HF_*, nothing but where to live; umask 022, the usual one, so that
    # private modes are the server's doing.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "HINDSIGHT_DATA_DIR": str(data_dir)}
    command = ["sh", "-c", 'umask 022 && exec "$@"', "sh", *server]
    items, status = asyncio.run(_drive(command, env))
    yield Session(data_dir, log, trace, untraced_because, items, status)
    for model in (data_dir / "models").glob("*.gguf"):
        model.unlink()  # 250 MB; pytest keeps the last runs' temporary directories


@pytest.mark.slow
def test_the_session_completed_through_the_real_model(session):
    assert session.status["modelLoaded"] is True, session.status
    assert session.status["served"] >= 1
    assert session.items and any("to_meters" in text for text in session.items), session.items
    assert session.status["database"] == str(session.data_dir / "hindsight.db")


_CALL = re.compile(r"^(?P<pid>\d+)\s+(?:<\.\.\. )?(?P<call>\w+)(?:\(| resumed>)(?P<rest>.*)$")
_FAMILY = re.compile(r"\b(AF_[A-Z0-9]+|PF_[A-Z0-9]+)\b")


def _calls(trace: Path) -> list[tuple[str, str]]:
    """(system call, the rest of its line) for each call strace wrote."""
    found = []
    for text in trace.read_text(errors="replace").splitlines():
        m = _CALL.match(text)
        if m:
            found.append((m.group("call"), m.group("rest")))
    return found


@pytest.mark.slow
def test_a_session_makes_no_network_connection(session):
    if session.trace is None:
        pytest.skip(f"not traced: {session.untraced_because}")
    calls = _calls(session.trace)
    assert any(call == "execve" for call, _ in calls), "strace saw nothing: the trace is empty"
    sockets = [(call, rest) for call, rest in calls if call in ("socket", "socketpair")]
    families = {f for _, rest in sockets for f in _FAMILY.findall(rest)[:1]}
    addressed = [
        (call, rest) for call, rest in calls
        if call in ("connect", "sendto", "sendmsg", "bind") and re.search(r"AF_INET6?\b", rest)
    ]  # fmt: skip
    assert not addressed, f"tried to reach the network: {addressed[:5]}"
    # What is allowed: asyncio's event loop wakes itself through a socketpair(AF_UNIX) (its "self-pipe";
    # the sendto(fd, "\0", 1, 0, NULL, 0) lines are those wake-ups). Nothing opens an Internet socket, not
    # even to loopback: a local LSP over stdio has no use for one.
    assert families <= {"AF_UNIX"}, f"sockets of other families were opened: {sockets[:5]}"
    programs = sorted({rest.split('"')[1] for call, rest in calls if call == "execve" and '"' in rest})
    assert all(Path(p).name.startswith("python") for p in programs), f"ran other programs: {programs}"


@pytest.mark.slow
def test_a_session_loads_no_http_client_or_hub_library(session):
    if session.trace is None:
        pytest.skip(f"not traced: {session.untraced_because}")
    opened = [rest for call, rest in _calls(session.trace) if call == "openat" and "ENOENT" not in rest]
    assert any("llama_cpp" in rest for rest in opened), "openat was not traced"
    loaded = sorted({lib for rest in opened for lib in NETWORK_LIBRARIES if f"/site-packages/{lib}/" in rest})
    assert not loaded, f"the server imported {loaded}"


@pytest.mark.slow
def test_database_log_and_data_dir_are_private(session):
    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(session.data_dir) == 0o700
    db = session.data_dir / "hindsight.db"
    assert mode(db) == 0o600
    for suffix in ("-wal", "-shm"):  # SQLite gives them the database's mode
        if Path(f"{db}{suffix}").exists():
            assert mode(Path(f"{db}{suffix}")) == 0o600, suffix
    assert session.log.stat().st_size > 0 and mode(session.log) == 0o600
    # Everything else the server wrote there (the workspace index holds code) is the owner's alone too;
    # only the model, public anyway, may be readable by others.
    readable = [
        f"{p.relative_to(session.data_dir)} {oct(mode(p))}"
        for p in session.data_dir.rglob("*")
        if p.is_file() and mode(p) & 0o077 and not p.name.startswith("gemma-3-270m")
    ]
    assert not readable, readable
