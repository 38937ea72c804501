"""The learning loop as the server runs it: by itself, when the user is idle, in a process of its own.

Every few seconds the server looks at three things (`Learning.tick`, on the event loop, never waiting):

1. Promotions: when the data directory's `gates/current.json` or `adapters/current.json` changed (a run
   this server started, another server's, the timer's, or `hindsight train-gate` / `refresh` by hand), the
   server reloads, as `hindsight.reload` would: the worker finishes the request it is on first.
2. A run it started: its progress (the lines `hindsight learn` writes, beginning with `STEP`, read from its
   log file) goes to the client as $/progress; when it ends, the record it wrote to the log says what
   changed, in one message.
   A run whose processes hold more memory than `learning.memoryMb` is killed (that leaves everything as
   it was: artefacts are written whole and promoted by an atomic rename).
3. Whether to start one: `learning.auto` on, no typing and no request for `learning.idleMinutes`, no run
   under way in the data directory (`artefacts.RunLock`), and enough new signal in the log since the last
   run (suggestions judged: at least the smaller of `minOutcomes` and `minPairs`; the run itself decides
   each step on its own threshold). The run is `python -m hindsight learn --background --threads N` in a
   session of its own, at idle CPU and I/O priority, writing to `learning/run.log` in the data directory;
   it outlives the server if the editor closes (it records itself in the log when it ends).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from hindsight.artefacts import RunLock
from hindsight.collector.reader import LogError, judged_since
from hindsight.options import LearningOptions
from hindsight.paths import data_dir, ensure_private_dir

log = logging.getLogger("hindsight")

STEP = "hindsight learn: "  # how `hindsight learn` begins its progress lines (the libraries it uses write theirs too)
WATCHED = ("gates", "adapters")  # the data directory's artefact stores whose current.json the server follows
PAGE = os.sysconf("SC_PAGE_SIZE")  # bytes of a memory page, /proc's statm unit


def summary(run: dict[str, Any]) -> str:
    """One line on a recorded run (the log's `learning_runs`): for each step that ran, what it promoted and
    what that measured, or why it did not; when neither ran, why not."""
    if run.get("status") == "failed":
        return f"the learning run failed: {run.get('reason')}"
    gate, refresh = run.get("gate") or {}, run.get("refresh") or {}
    parts = []
    if gate and not gate.get("skipped"):
        if gate.get("promoted"):
            auc = gate.get("current_auc_stage2"), gate.get("auc_stage2")
            measured = f" (held-out AUC {_num(auc[0]) if auc[0] is not None else 'none'} → {_num(auc[1])})" \
                if auc[1] is not None else ""
            parts.append(f"gate {gate.get('version')} promoted{measured}")
        else:
            parts.append(f"gate not promoted: {gate.get('reason')}")
    if refresh and not refresh.get("skipped"):
        measured = (f"acceptance on your held-out files {_num(refresh.get('acceptance_before'))} → "
                    f"{_num(refresh.get('acceptance_after'))}, characters kept {refresh.get('accepted_chars_before')} → "
                    f"{refresh.get('accepted_chars_after')}")
        parts.append(f"{measured}, adapter {refresh.get('version')} promoted" if refresh.get("promoted")
                     else f"adapter not promoted: {refresh.get('reason')} ({measured})")
    if parts:
        return "; ".join(parts)
    return "nothing to learn yet (" + "; ".join(f"{step}: {(run.get(step) or {}).get('reason')}"
                                                  for step in ("gate", "refresh") if run.get(step)) + ")"


def _num(x: Any) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".") if isinstance(x, float) else str(x)


def last_summary(run: dict[str, Any]) -> dict[str, Any]:
    """The last run, as `hindsight.status` tells it."""
    return {"endedAt": run.get("ended_at"), "status": run.get("status"), "promoted": run.get("promoted") or [],
            "reason": run.get("reason"), "summary": summary(run), "trigger": run.get("trigger")}


class Progress:
    """Where a run's progress goes (the server: $/progress); this one says nothing."""

    def begin(self, title: str) -> None: ...

    def report(self, message: str) -> None: ...

    def end(self, message: str) -> None: ...


def group_rss_mb(pgid: int) -> float:
    """The resident memory of every process in process group `pgid` (a run and the children it starts), MiB."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid:  # the fifth field of stat: its process group
                total += int(Path(entry.path, "statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return total * PAGE / 2**20


class Learning:
    """The server's side of the learning loop (see the module's text). `db()`: the log's path (None: no
    log, no learning); `runs()`: its recorded runs' last (a dict) or None; `idle_s()`: seconds since the
    user last typed or asked; `reload()`: starts a reload; `tell(message, level)`: a message for the user."""

    def __init__(self, options: LearningOptions, *, db: Callable[[], Path | None],
                 last_run: Callable[[], dict[str, Any] | None], idle_s: Callable[[], float],
                 reload: Callable[[], None], tell: Callable[[str, str], None], progress: Progress | None = None):
        self.options = options
        self.db, self.last_run, self.idle_s, self.reload, self.tell = db, last_run, idle_s, reload, tell
        self.progress = progress or Progress()
        self.child: subprocess.Popen | None = None
        self.stage: str | None = None
        self.started_at: float | None = None  # when this server last started a run
        self._log_at = 0  # bytes of the run's log already read
        self._pointers = self._read_pointers()
        self._checked_at = 0.0  # the idle time when readiness was last computed
        self._waiting: str | None = None  # why no run starts yet, as last computed

    @staticmethod
    def log_path() -> Path:
        return data_dir() / "learning" / "run.log"

    # -- the tick ----------------------------------------------------------------------------------------
    def interval_s(self) -> float:
        """How often to tick: every second while a run works, else a quarter of the idle time (at most 30 s)."""
        if self.child is not None:
            return 1.0
        return min(30.0, max(0.25, self.options.idle_minutes * 60 / 4))

    def tick(self) -> None:
        self._reload_if_promoted()
        if self.child is not None:
            self._follow()
        elif self.ready():
            self.start()

    def _read_pointers(self) -> tuple:
        out = []
        for name in WATCHED:
            try:
                st = (data_dir() / name / "current.json").stat()
                out.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    # -- starting a run ----------------------------------------------------------------------------------
    def new_signal(self) -> tuple[int, int]:
        """(suggestions judged since the last run started, or this server's last try; how many it takes)."""
        db = self.db()
        need = min(self.options.min_outcomes, self.options.min_pairs)
        if db is None:
            return 0, need
        last = self.last_run() or {}
        since = max(filter(None, (last.get("started_at"), self.started_at)), default=None)
        try:
            return judged_since(db, since), need
        except LogError:
            return 0, need

    def ready(self) -> bool:
        """Whether to start a run now. The log is read once a minute of an idle spell at most (nothing new is
        judged while the user is away, but for the last persistence checks)."""
        if not self.options.auto or self.db() is None:
            return False
        idle = self.idle_s()
        if idle < self.options.idle_minutes * 60:
            self._checked_at = 0.0
            return False
        if self._checked_at and idle - self._checked_at < 60:
            return False
        self._checked_at = idle
        self.look()
        return self._waiting is None

    def look(self) -> None:
        """Read the log for what a run would wait for, the user being idle (`next` tells it)."""
        judged, need = self.new_signal()
        if judged < need:
            self._waiting = f"once {need - judged} more suggestions are judged"
            return
        with RunLock(data_dir()) as lock:
            held = lock.held
        self._waiting = None if held else "when the run under way (another server's, or the timer's) has ended"

    def start(self) -> None:
        db = self.db()
        opts = self.options
        path = self.log_path()
        ensure_private_dir(path.parent)
        command = [sys.executable, "-m", "hindsight", "learn", "--db", str(db), "--trigger", "server", "--background",
                   "--threads", str(opts.threads), "--min-outcomes", str(opts.min_outcomes),
                   "--min-pairs", str(opts.min_pairs), "--json"]
        with open(path, "wb") as out:  # the child has its own descriptor; the server's closes here
            os.fchmod(out.fileno(), 0o600)
            try:
                self.child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                              start_new_session=True, close_fds=True)
            except OSError as exc:
                self.tell(f"hindsight: could not start the learning run: {exc}", "warning")
                return
        self.started_at, self.stage, self._log_at = time.time(), "starting", 0
        log.info("learning run started (pid %d), log %s", self.child.pid, path)
        self.progress.begin("hindsight: learning from your log")

    # -- a run under way ---------------------------------------------------------------------------------
    def _follow(self) -> None:
        child = self.child
        for line in self._new_lines():
            if line.startswith(STEP):
                self.stage = line[len(STEP) :][:200]
                self.progress.report(self.stage)
        if child.poll() is None:
            rss = group_rss_mb(child.pid)
            if rss > self.options.memory_mb:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                self._ended(f"hindsight: the learning run was stopped: it held {rss:.0f} MiB, more than "
                            f"learning.memoryMb ({self.options.memory_mb}); nothing changed", "warning")
            return
        run = self.last_run()
        if run is not None and (run.get("started_at") or 0) >= (self.started_at or 0) - 5:
            failed = run.get("status") == "failed"
            self._ended(f"hindsight{'' if failed else ' learned'}: {summary(run)}", "warning" if failed else "info")
        elif child.returncode == 0:  # busy: another server's run, or the timer's, got there first
            self._ended("another run was under way", None)
        else:
            self._ended(f"hindsight: the learning run ended without a record (exit status {child.returncode}); "
                        f"see {self.log_path()}", "warning")

    def _new_lines(self) -> list[str]:
        try:
            with open(self.log_path(), "rb") as f:
                f.seek(self._log_at)
                data = f.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1
        self._log_at += end
        return [line.strip() for line in data[:end].decode("utf-8", "replace").splitlines() if line.strip()]

    def _ended(self, message: str, level: str | None) -> None:
        """The run is over: the progress ends with `message`, which the user is told (unless `level` is None),
        and the server reloads at once if it promoted something."""
        self.child, self.stage = None, None
        self.progress.end(message)
        if level is not None:
            self.tell(message, level)
        self._reload_if_promoted()

    def _reload_if_promoted(self) -> None:
        pointers = self._read_pointers()
        if pointers != self._pointers:
            self._pointers = pointers
            log.info("a new gate or adapter was promoted: reloading")
            self.reload()

    # -- what status tells ---------------------------------------------------------------------------------
    def next(self) -> dict[str, Any]:
        """The next run, as `hindsight.status` tells it."""
        opts = self.options
        if self.child is not None:
            when = f"under way: {self.stage}"
        elif not opts.auto:
            when = "automatic learning is off (learning.auto)"
        else:
            when = f"after {opts.idle_minutes:g} idle minutes" + (f", {self._waiting}" if self._waiting else "")
        return {"auto": opts.auto, "running": self.child is not None, "stage": self.stage, "when": when,
                "idleMinutes": opts.idle_minutes}
