"""`hindsight bench storm`, short: a typing storm through the real server leaves every request answered,
the server up, its memory where it was, and the newest request served once the typing stops."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_a_short_storm_is_all_answered_and_the_last_request_served():
    # 8 s at 20 keystrokes a second over two documents of the standard library's email package.
    result = subprocess.run(
        [sys.executable, "-m", "hindsight", "bench", "storm", "--seconds", "8", "--rate", "20",
         "--documents", "2", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    storm = json.loads(result.stdout)
    assert storm["answered"] == storm["requests"], storm  # none left waiting, stale ones included
    assert storm["errors"] == 0, storm.get("error_messages")
    # The final request had nothing newer to yield to: the model served it (a list, not a null).
    assert storm["last_kind"] in ("shown", "empty"), storm
    assert storm["after_shown"] >= 1, storm  # the user stops typing: a suggestion appears
    assert storm["server_alive"], storm
    assert storm["rss_end_mb"] < storm["rss_start_mb"] + 150, storm
