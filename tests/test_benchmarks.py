"""The benchmark programs run: a tiny configuration of each on the CPU, every JSON line naming its device and holding
a measurement, not an error, so that a borrowed GPU's minutes never go to a broken script. No timing is checked."""

from __future__ import annotations

import json
import runpy
import sys

from conftest import REPO, TINY_ARCH
from mimzoo.data.sources import BUILTIN_SAMPLE
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


def run_script(monkeypatch, script: str, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", [script, *args])
    runpy.run_path(str(REPO / "benchmarks" / script), run_name="__main__")


def test_a_pack_squeezed_for_the_carry_expands_to_the_same_arrays(monkeypatch, tmp_path):
    import io

    import numpy as np
    import pytest
    from PIL import Image

    def encoded(fmt: str, **options) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (200, 30, 90)).save(buffer, fmt, **options)
        return buffer.getvalue()

    with np.load(BUILTIN_SAMPLE) as sample:
        arrays = {key: sample[key] for key in sample.files}
    # beside the sample's JPEGs: an image of other tables, a PNG (no JPEG header) and a split with a gap in its bytes
    extra = [encoded("JPEG", quality=20), encoded("PNG")]
    arrays["odd_jpeg"] = np.frombuffer(b"".join(extra), np.uint8)
    arrays["odd_offsets"] = np.cumsum([0, *map(len, extra)])
    arrays["gap_jpeg"], arrays["gap_offsets"] = arrays["odd_jpeg"], np.array([0, len(extra[0])])
    original = tmp_path / "pack.npz"
    np.savez(original, **arrays)
    squeezed, expanded = tmp_path / "pack.carry.npz", tmp_path / "again.npz"
    run_script(monkeypatch, "carry_pack.py", "squeeze", str(original), str(squeezed))
    run_script(monkeypatch, "carry_pack.py", "expand", str(squeezed), str(expanded))
    assert squeezed.stat().st_size < 0.6 * original.stat().st_size  # the sample's headers, kept once
    with np.load(expanded) as again:
        assert sorted(again.files) == sorted(arrays)
        for key, array in arrays.items():
            assert again[key].dtype == array.dtype and np.array_equal(again[key], array), key

    with np.load(squeezed) as packed:
        damaged = {key: packed[key].copy() for key in packed.files}
    damaged["train_jpeg_scans"][100] ^= 1
    np.savez(tmp_path / "damaged.npz", **damaged)
    with pytest.raises(SystemExit, match="train_jpeg differ"):
        run_script(monkeypatch, "carry_pack.py", "expand", str(tmp_path / "damaged.npz"), str(tmp_path / "x.npz"))
    assert not (tmp_path / "x.npz").exists() and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["pack.npz", "pack.carry.npz", "again.npz", "damaged.npz"])
