"""The VS Code extension in a real VS Code: code-server (VS Code in a browser) in headless Chromium, with
the packaged .vsix, the real `hindsight serve` and the embedded model. `make vscode-e2e` builds the editor
and its driver into the build cache once (Node 24, code-server, Debian's Chromium, playwright-core);
editors/vscode/e2e/driver.cjs types and reads the page; the log is read from the real SQLite file.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
VSCODE = ROOT / "editors" / "vscode"

PY_FILE = '''import math


class Circle:
    def __init__(self, radius):
        self.radius = radius

    def area(self):
        return math.pi * self.radius ** 2

    def circumference(self):
'''

JS_FILE = '''function add(a, b) {
  return a + b;
}

function multiply(a, b) {
'''


def need_editor() -> Path:
    """The test editor `make vscode-e2e` built, where HINDSIGHT_VSCODE_E2E says (these tests are not yet part
    of `make test`: they run when it is set)."""
    if not os.environ.get("HINDSIGHT_VSCODE_E2E"):
        pytest.skip("set HINDSIGHT_VSCODE_E2E to the editor `make vscode-e2e` builds (not yet part of make test)")
    root = Path(os.environ["HINDSIGHT_VSCODE_E2E"]).expanduser()
    for path in (root / "node" / "bin" / "node", root / "code-server" / "node_modules" / ".bin" / "code-server",
                 root / "driver" / "node_modules" / "playwright-core", Path("/usr/bin/chromium")):
        if not path.exists():
            pytest.skip(f"no {path}: `make vscode-e2e` builds the test editor (it needs the npm and Debian registries)")
    return root



class Driver:
    """editors/vscode/e2e/driver.cjs, one command at a time."""

    def __init__(self, root: Path, log: Path):
        env = {**os.environ, "PLAYWRIGHT_CORE": str(root / "driver" / "node_modules" / "playwright-core"),
               "SCREENSHOT_ON_ERROR": str(log.with_suffix(".png"))}
        self.proc = subprocess.Popen([str(root / "node" / "bin" / "node"), str(VSCODE / "e2e" / "driver.cjs")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("wb"),
                                     text=True, env=env)

    def __call__(self, op: str, **args) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline() or '{"ok": false, "error": "the driver ended"}')
        assert answer.pop("ok"), f"{op}: {answer.get('error')} (the page: {answer.get('screenshot')})"
        return answer

    def close(self) -> None:
        try:
            self("close")
        finally:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


class Editor:
    """code-server with the extension installed, on a workspace of its own, and a browser on it."""

    def __init__(self, root: Path, work: Path, *, proposed: bool, settings: dict | None = None,
                 server: list[str] | None = None):
        self.work = work
        self.folder = work / "project"
        self.folder.mkdir(parents=True)
        (self.folder / "shapes.py").write_text(PY_FILE)
        (self.folder / "arith.js").write_text(JS_FILE)
        self.db = work / "hindsight.db"
        user = work / "user-data"
        (user / "User").mkdir(parents=True)
        (user / "User" / "settings.json").write_text(json.dumps({
            "chat.disableAIFeatures": True,
            "workbench.startupEditor": "none",
            "workbench.tips.enabled": False,
            "security.workspace.trust.enabled": False,
            "telemetry.telemetryLevel": "off",
            "extensions.autoCheckUpdates": False,
            "extensions.autoUpdate": False,
            "files.autoSave": "afterDelay",
            "files.autoSaveDelay": 200,
            **(settings or {}),
        }))
        # The server command is a machine setting: in a remote window (code-server is one) VS Code reads it
        # from the machine's settings, not the user's.
        (user / "Machine").mkdir()
        (user / "Machine" / "settings.json").write_text(json.dumps({
            "hindsight.serverCommand": server or [sys.executable, "-m", "hindsight", "serve",
                                                  *json.loads(os.environ.get("HINDSIGHT_E2E_SERVER_ARGS", "[]"))],
        }))
        extensions = work / "extensions"
        env = {**os.environ, "PATH": f"{root / 'node' / 'bin'}:{os.environ['PATH']}", "HINDSIGHT_DB": str(self.db),
               "XDG_CONFIG_HOME": str(work / "config"), "XDG_DATA_HOME": str(work / "data")}
        code_server = str(root / "code-server" / "node_modules" / ".bin" / "code-server")
        common = ["--user-data-dir", str(user), "--extensions-dir", str(extensions)]
        installed = subprocess.run([code_server, *common, "--install-extension", str(vsix(work))], env=env,
                                   capture_output=True, text=True, timeout=120)
        assert installed.returncode == 0, installed.stderr
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/?folder={self.folder}"
        self.log = work / "code-server.log"
        args = [code_server, *common, "--bind-addr", f"127.0.0.1:{port}", "--auth", "none", "--disable-telemetry",
                "--disable-update-check", "--disable-workspace-trust", "--disable-getting-started-override",
                *(["--enable-proposed-api", "hindsight.hindsight"] if proposed else []), str(self.folder)]
        self.proc = subprocess.Popen(args, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and self.proc.poll() is None, self.log.read_text()[-3000:]
                time.sleep(0.3)
        self.page = Driver(root, work / "driver.log")
        self.page("goto", url=self.url)

    def rows(self) -> list[dict]:
        """The log's requests, oldest first (read-only; the server keeps writing)."""
        if not self.db.exists():
            return []
        with sqlite3.connect(f"{self.db.as_uri()}?mode=ro", uri=True) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY created_at")]

    def shown(self, timeout: float = 10) -> dict:
        """The last suggestion the log says was shown, once its outcome is recorded."""
        deadline = time.monotonic() + timeout
        while True:
            rows = [r for r in self.rows() if r["decision"] == "show"]
            if rows and rows[-1]["outcome"] or time.monotonic() > deadline:
                assert rows and rows[-1]["outcome"], [(r["completion"], r["decision"], r["outcome"]) for r in self.rows()][-5:]
                return rows[-1]
            time.sleep(0.2)

    def close(self) -> None:
        try:
            self.page.close()
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=30)


_VSIX: list[Path] = []


def vsix(work: Path) -> Path:
    """The extension packaged as users install it (once per run)."""
    if not _VSIX:
        out = work.parent / "hindsight.vsix"
        done = subprocess.run(["npm", "run", "package", "--silent", "--", "--out", str(out)], cwd=VSCODE,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        _VSIX.append(out)
    return _VSIX[0]


@pytest.fixture(params=[True, False], ids=["proposed-api", "stable-api"])
def editor(request, tmp_path):
    root = need_editor()
    quiet = {"editor.quickSuggestions": {"other": False, "comments": False, "strings": False},
             "editor.wordBasedSuggestions": "off"}
    ed = Editor(root, tmp_path, proposed=request.param, settings=quiet)
    yield ed
    ed.close()
    shutil.rmtree(tmp_path / "data", ignore_errors=True)


def type_until_ghost(ed: Editor, text: str, file: str = "shapes.py") -> str:
    """Open `file`, wait for the server, type `text` at the end, and return the ghost text drawn. What is
    typed while the server starts gets no suggestion, and none comes once it runs until the next
    keystroke: so a space is typed and taken back until the log holds a request."""
    ed.page("open", file=file)
    ed.page("press", key="Control+End")
    deadline = time.monotonic() + 90
    while not ed.rows():
        assert time.monotonic() < deadline, "no request reached the server in 90 s"
        ed.page("type", text=" ")
        ed.page("press", key="Backspace")
        time.sleep(1)
    ed.page("type", text=text, delay=120)
    return ed.page("ghost", timeout=30000)["text"]


def same_text(ghost: str, completion: str) -> bool:
    """Ghost text as the page draws it against the suggestion's text (the lines' ends aside)."""
    return [line.rstrip() for line in ghost.split("\n")] == [line.rstrip() for line in completion.split("\n")]


def test_ghost_text_appears_and_tab_inserts_it(editor):
    ghost = type_until_ghost(editor, "        return 2 * ")
    editor.page("press", key="Tab")
    row = editor.shown()
    assert same_text(ghost, row["completion"]), (ghost, row["completion"])
    assert (row["outcome"], row["outcome_reason"]) == ("accepted", "command")
    time.sleep(1)  # auto-save
    assert (editor.folder / "shapes.py").read_text() == PY_FILE + "        return 2 * " + row["completion"]


def test_escape_records_dismissed(editor):
    ghost = type_until_ghost(editor, "        return 2 * ")
    editor.page("press", key="Escape")
    row = editor.shown()
    assert same_text(ghost, row["completion"]), (ghost, row["completion"])
    assert (row["outcome"], row["outcome_reason"]) == ("rejected", "dismissed")


def test_typing_something_else_records_typed_over(editor):
    ghost = type_until_ghost(editor, "        return 2 * ")
    assert ghost and not ghost.startswith("(")
    editor.page("type", text="(", delay=120)
    row = [r for r in editor.rows() if r["decision"] == "show"][-1]
    assert same_text(ghost, row["completion"]), (ghost, row["completion"])
    deadline = time.monotonic() + 10
    while row["outcome"] is None and time.monotonic() < deadline:
        time.sleep(0.2)
        row = next(r for r in editor.rows() if r["id"] == row["id"])
    assert (row["outcome"], row["outcome_reason"]) == ("rejected", "typed_over")


def test_javascript_and_the_status_bar(editor):
    ghost = type_until_ghost(editor, "  return a * ", file="arith.js")
    assert ghost.strip()
    editor.page("press", key="Tab")
    row = editor.shown()
    assert row["language"] == "javascript" and (row["outcome"], row["outcome_reason"]) == ("accepted", "command")
    time.sleep(1)
    assert (editor.folder / "arith.js").read_text() == JS_FILE + "  return a * " + row["completion"]
    deadline = time.monotonic() + 15  # the bar shows the acceptance rate once it has asked the server again
    while not any("hindsight 100%" in item for item in editor.page("statusbar")["items"]):
        assert time.monotonic() < deadline, editor.page("statusbar")["items"]
        time.sleep(0.5)


BAR = '.statusbar-item:has-text("hindsight")'


def test_the_commands_from_the_palette(editor):
    assert type_until_ghost(editor, "        return 2 * ").strip()
    editor.page("press", key="Escape")
    editor.page("command", title="Hindsight: Toggle Inline Completions")
    editor.page("waitFor", selector=f"{BAR} .codicon-circle-slash")
    shown = len([r for r in editor.rows() if r["decision"] == "show"])
    editor.page("type", text="m", delay=120)
    assert editor.page("ghost", timeout=4000)["text"] == ""  # off: nothing is asked for
    assert len([r for r in editor.rows() if r["decision"] == "show"]) == shown
    editor.page("press", key="Backspace")
    editor.page("command", title="Hindsight: Toggle Inline Completions")
    editor.page("waitFor", selector=f"{BAR} .codicon-sparkle")
    editor.page("command", title="Hindsight: Show Statistics")
    editor.page("waitFor", selector=".panel .monaco-editor .view-lines")
    report = "\n".join(editor.page("text", selector=".panel .monaco-editor .view-lines")["texts"])
    assert '"acceptance_rate"' in report, report[:500]  # the end of the report: the server's statistics
    editor.page("command", title="Hindsight: Reload")
    editor.page("waitFor", selector='.notifications-toasts :text("Hindsight reloaded")')


def test_a_server_that_fails_to_start_is_one_clear_message(tmp_path):
    failing = [sys.executable, "-c", "import sys; sys.exit('hindsight: no model at /nowhere/model.gguf')"]
    ed = Editor(need_editor(), tmp_path, proposed=True, server=failing)
    try:
        ed.page("open", file="shapes.py")
        ed.page("waitFor", selector=f"{BAR} .codicon-error", timeout=30000)
        messages = ed.page("text", selector=".notifications-toasts .notification-list-item-message")["texts"]
        assert len([m for m in messages if "hindsight" in m.lower()]) == 1, messages
        assert "no model at /nowhere/model.gguf" in messages[0], messages
    finally:
        ed.close()
