"""TRL's default DPO trainer, timed as the baseline hindsight/refresh/dpo.py is compared against."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_trl_baseline_trains_a_step_and_reports_its_rate(tmp_path):
    from hindsight.refresh.trl_baseline import trl_pairs_per_minute

    pairs = [
        {"prompt": f"def add_{i}(a, b):\n    return ", "chosen": "a + b", "rejected": "a - b"} for i in range(4)
    ]
    result = trl_pairs_per_minute(pairs, steps=1, work_dir=tmp_path)

    assert {"pairs_per_minute", "seconds", "steps", "pairs", "config"} <= result.keys()
    assert result["steps"] == 1 and result["pairs"] == 4
    assert result["seconds"] > 0 and result["pairs_per_minute"] > 0
    assert result["pairs_dropped"] == 0 and result["pairs_over_max_length"] == 0  # short prompts: nothing cut
    config = result["config"]
    keys = ("max_length", "gradient_checkpointing", "precompute_ref_log_probs", "loss_type", "beta", "learning_rate")
    assert all(key in config for key in keys)
    assert list(tmp_path.iterdir()) == []  # the trainer's output dir is removed
