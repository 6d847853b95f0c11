"""The benchmark programs run: a tiny configuration of each on the CPU, every JSON line naming its device and holding
a measurement, not an error, so that a borrowed GPU's minutes never go to a broken script. No timing is checked."""

from __future__ import annotations

import json
import runpy
import sys

from conftest import REPO, TINY_ARCH
from mimzoo.methods import METHODS


def run_benchmark(monkeypatch, tmp_path, script: str, *args: str) -> list[dict]:
    out = tmp_path / "lines.jsonl"
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # as when run from there: results_log beside them
    monkeypatch.setattr(sys, "argv", [script, *args, "--out", str(out)])
    runpy.run_path(str(REPO / "benchmarks" / script), run_name="__main__")
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_the_model_step_benchmark_measures_every_method_beside_the_peer(monkeypatch, tmp_path):
    lines = run_benchmark(monkeypatch, tmp_path, "pretrain_throughput.py", "--arch", TINY_ARCH, "--batch", "2",
                          "--steps", "1", "--warmup", "0", "--methods", "all")
    assert [line["impl"] for line in lines] == ["transformers:ViTMAEForPreTraining", *(f"mimzoo:{m}" for m in METHODS)]
    for line in lines:
        assert "error" not in line and line["device"] == "cpu" and line["img_per_s"] > 0, line
        assert line["gflop_per_image"] > 0
    assert all(line["speedup_vs_transformers"] > 0 for line in lines[1:])


def test_the_data_benchmark_runs_both_paths_end_to_end_and_the_peer(monkeypatch, tmp_path):
    lines = run_benchmark(monkeypatch, tmp_path, "data_throughput.py", "--data", "builtin", "--method", "mae",
                          "--arch", TINY_ARCH, "--batch", "8", "--batches", "2", "--workers", "0", "--peer")
    assert [line["impl"] for line in lines] == ["model-only", "mimzoo --data-device cpu", "mimzoo --data-device gpu",
                                                "torchvision-mae (data only)"]
    assert all(line["device"] == "cpu" and line["img_per_s"] > 0 for line in lines)
    device_path = lines[2]
    assert device_path["resident"] and device_path["mean_abs_diff_vs_pil"] < 1  # levels of 255
    assert all(line["end_to_end_over_model_only"] > 0 for line in lines[1:3])


def test_the_step_profile_splits_the_time_by_kind(monkeypatch, tmp_path):
    lines = run_benchmark(monkeypatch, tmp_path, "profile_step.py", "--arch", TINY_ARCH, "--batch", "2", "--steps",
                          "1", "--warmup", "0", "--methods", "mae,mff", "--top", "3")
    assert [line["impl"] for line in lines] == ["mimzoo:mae", "mimzoo:mff"]
    for line in lines:
        assert line["device"] == "cpu" and 0 < line["busy_ms"] and 0 < line["busy_fraction"]
        assert abs(sum(line["share"].values()) - 1) < 0.01 and line["share"]["matmul"] > 0
        assert len(line["top"]) == 3

