"""`hindsight schedule install|remove|show`: the learning loop at a fixed time, as a systemd user timer, for
people who prefer that to the server's own idle-time runs.

    ~/.config/systemd/user/hindsight-learn.service   runs `python -m hindsight learn`, niced, idle I/O
    ~/.config/systemd/user/hindsight-learn.timer     daily at the time given; Persistent: a day the machine
                                                     slept through runs when it wakes

The service runs with the environment the command was installed from (HINDSIGHT_DB, HINDSIGHT_DATA_DIR),
so it learns from the same log into the same data directory.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from hindsight.errors import UsageError

NAME = "hindsight-learn"
ENVIRONMENT = ("HINDSIGHT_DB", "HINDSIGHT_DATA_DIR")
TIME_RE = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def unit_dir() -> Path:
    """Where systemd looks for the user's own units: $XDG_CONFIG_HOME/systemd/user."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


def units(at: str, python: str = sys.executable) -> dict[str, str]:
    """The service and timer files' text, for a daily run at `at` (HH:MM, local time)."""
    match = TIME_RE.match(at)
    if not match:
        raise UsageError(f"--at {at!r}: give a time of day as HH:MM")
    hour, minute = int(match.group(1)), int(match.group(2))
    env = "".join(f"Environment={shlex.quote(f'{k}={os.environ[k]}')}\n" for k in ENVIRONMENT if os.environ.get(k))
    service = (
        "[Unit]\n"
        "Description=hindsight: one run of the learning loop (gate and adapter from the log)\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"ExecStart={shlex.quote(python)} -m hindsight learn --trigger timer\n"
        f"{env}"
        "Nice=19\n"
        "IOSchedulingClass=idle\n"
        "CPUSchedulingPolicy=batch\n"
    )
    timer = (
        "[Unit]\n"
        "Description=hindsight: the learning loop, daily\n\n"
        "[Timer]\n"
        f"OnCalendar=*-*-* {hour:02d}:{minute:02d}:00\n"
        "Persistent=true\n"
        "RandomizedDelaySec=600\n\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return {f"{NAME}.service": service, f"{NAME}.timer": timer}


def _systemctl(*args: str) -> str | None:
    """Runs `systemctl --user ARGS`; None when it worked, else why not (no systemd, no user session)."""
    if shutil.which("systemctl") is None:
        return "no systemctl on this machine"
    done = subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True, timeout=30)
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["failed"])[-1]


def install(at: str) -> dict:
    """Writes the units and enables the timer when a systemd user session answers; says what to run when
    none does (a container, an SSH session without lingering)."""
    directory, files = unit_dir(), units(at)
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    problem = _systemctl("daemon-reload") or _systemctl("enable", "--now", f"{NAME}.timer")
    return {"installed": [str(directory / n) for n in files], "at": at, "enabled": problem is None,
            "note": None if problem is None else
            f"the timer is written but not enabled ({problem}): run `systemctl --user enable --now {NAME}.timer`"}


def remove() -> dict:
    """Disables the timer (when systemd answers) and deletes the units."""
    problem = _systemctl("disable", "--now", f"{NAME}.timer")
    removed = []
    for name in (f"{NAME}.service", f"{NAME}.timer"):
        path = unit_dir() / name
        if path.exists():
            path.unlink()
            removed.append(str(path))
    _systemctl("daemon-reload")
    return {"removed": removed, "disabled": problem is None}


def show() -> dict:
    """The installed units, if any."""
    paths = [unit_dir() / f"{NAME}.{kind}" for kind in ("service", "timer")]
    return {"installed": [str(p) for p in paths if p.exists()]}
