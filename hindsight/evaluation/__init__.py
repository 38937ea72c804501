"""Benchmarks, the simulated developer and the demo."""

from __future__ import annotations

import json


def print_result(result: dict, as_json: bool) -> None:
    """A command's result: one JSON object, or one aligned `key  value` line per field."""
    if as_json:
        print(json.dumps(result))
        return
    width = max(map(len, result), default=0)
    for key, value in result.items():
        print(f"{key:>{width}}  {value}")
