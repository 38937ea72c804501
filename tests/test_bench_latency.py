"""`hindsight bench latency` measures the machine's own speed, so its figures compare across machines."""

from __future__ import annotations

import pytest

from hindsight.evaluation.bench_latency import cpu_name, machine_speed


@pytest.mark.slow
def test_machine_speed_is_one_decode_step_and_a_prefill_rate():
    speed = machine_speed(None, runs=1)
    assert set(speed) == {"decode_step_ms", "prefill_tokens_per_s"}
    assert 0 < speed["decode_step_ms"] < 10_000
    # A prompt is evaluated in batches, so a prompt token costs less than a decode step: if it did not,
    # one of the two would measure something else (a prompt reused from the cache, a step with no eval).
    assert 1000 / speed["prefill_tokens_per_s"] < speed["decode_step_ms"]


def test_the_cpu_has_a_name():
    assert cpu_name().strip()
