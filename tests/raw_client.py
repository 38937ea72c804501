"""A raw JSON-RPC client for the real server over stdio. It frames the bytes itself, so a test can send
what no LSP library would: broken JSON, wrong shapes, bad headers. Used by test_protocol.py and
test_protocol_fuzz.py.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def frame(body: bytes, length: int | None = None) -> bytes:
    """`body` with its Content-Length header (a different `length` to lie about it)."""
    return b"Content-Length: %d\r\n\r\n" % (len(body) if length is None else length) + body


class RawServer:
    """`python -m hindsight serve` in its own process; everything it writes is kept in `received`."""

    def __init__(self):
        self.stderr = tempfile.NamedTemporaryFile(prefix="hindsight-raw-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hindsight", "serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, cwd=ROOT,
        )
        self.received: list[dict] = []
        self.unframed: list[bytes] = []  # anything on stdout that is not a framed JSON message
        self.cond = threading.Condition()
        self.ids = itertools.count(1)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        out = self.proc.stdout
        while True:
            length, header = None, out.readline()
            while header not in (b"\r\n", b""):
                name, _, value = header.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                elif name.strip().lower() != b"content-type":
                    self.unframed.append(header)
                header = out.readline()
            if not header or length is None:
                break
            body = out.read(length)
            try:
                message = json.loads(body)
            except ValueError:
                self.unframed.append(body)
                continue
            if isinstance(message, dict) and "method" in message and "id" in message:
                self.send({"jsonrpc": "2.0", "id": message["id"], "result": None})  # a request to the client
            with self.cond:
                self.received.append(message)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    # -- sending ----------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, message) -> None:
        self.write(frame(json.dumps(message).encode()))

    def request(self, method: str, params=None, id=None):
        """Send a request; its id (a fresh one unless given)."""
        id = next(self.ids) if id is None else id
        self.send({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
        return id

    def notify(self, method: str, params=None) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    # -- receiving --------------------------------------------------------------------------------------
    def wait(self, check, timeout: float = 10.0):
        """Wait until `check(received)` is truthy; its value (falsy on timeout or when the server has exited)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not (value := check(self.received)):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return check(self.received)
                self.cond.wait(min(left, 0.5))
            return value

    def responses(self, id) -> list[dict]:
        with self.cond:
            return [m for m in self.received if isinstance(m, dict) and "method" not in m and m.get("id", ...) == id]

    def response(self, id, timeout: float = 10.0) -> dict:
        found = self.wait(lambda _: self.responses(id), timeout)
        assert found, f"no answer to request {id!r} in {timeout} s; server log:\n{self.log_tail()}"
        return found[0]

    def call(self, method: str, params=None, timeout: float = 10.0) -> dict:
        return self.response(self.request(method, params), timeout)

    def null_id_errors(self) -> list[dict]:
        """Answers with `"id": null`: to messages whose id could not be read (JSON-RPC 2.0 §5)."""
        with self.cond:
            return [m for m in self.received if isinstance(m, dict) and "id" in m and m["id"] is None and "error" in m]

    # -- the session ------------------------------------------------------------------------------------
    def initialize(self, options: dict, root_uri: str | None = None) -> dict:
        answer = self.call(
            "initialize",
            {"processId": None, "rootUri": root_uri, "capabilities": {}, "initializationOptions": options},
            timeout=60,
        )
        assert "result" in answer, answer
        self.notify("initialized", {})
        return answer["result"]

    def open(self, uri: str, text: str, language: str = "python", version: int = 1) -> None:
        self.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": language, "version": version, "text": text}},
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 4000) -> str:
        return Path(self.stderr.name).read_text(errors="replace")[-n:]

    def close(self) -> None:
        if self.alive():
            try:
                self.call("shutdown", None, timeout=10)
                self.notify("exit")
                self.proc.wait(10)
            except (AssertionError, OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        Path(self.stderr.name).unlink(missing_ok=True)
