"""torchrun with 2 CPU processes (gloo): DDP trains, replicas stay identical, only rank 0 writes files."""

import json
import shutil

import pytest

from conftest import TINY_ARCH, torchrun


@pytest.mark.slow
def test_torchrun_two_process_gloo(image_folder, tmp_path):
    out = tmp_path / "ddp"
    result = torchrun("pretrain", "--data", image_folder, "--arch", TINY_ARCH, "--out", out, "--batch-size", "4",
                      "--accum", "2", "--epochs", "2", "--warmup-epochs", "1", "--workers", "0", "--log-every", "1",
                      cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "effective batch 4 x accum 2 x 2 processes = 16" in output
    assert "weights identical on all 2 processes" in output
    assert output.count("effective batch") == 1  # rank 0 alone reports, its log lines too, in stdout
    assert [line.split(" loss ")[0] for line in result.stdout.splitlines() if line.startswith("pretrain ")] == [
        f"pretrain {step}/6" for step in range(1, 7)]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json", "export", "metrics.jsonl"]
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))  # 48 images / 16 per step = 3 steps x 2 epochs, logged once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # nothing stray from rank 1


@pytest.mark.slow
def test_torchrun_two_process_finetune(finished_run, image_folder, tmp_path):
    out, export = tmp_path / "ft", shutil.copytree(finished_run[0] / "export", tmp_path / "export")
    result = torchrun("finetune", export, "--data", image_folder, "--val-fraction", "0.25", "--epochs", "1",
                      "--warmup-epochs", "0", "--batch-size", "4", "--workers", "0", "--out", out, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("val-carve top-1") == 1  # rank 0 alone reports
    progress = [line for line in output.splitlines() if line.startswith("evaluate val-carve ")]
    assert progress and len(progress) == len(set(progress))  # the evaluation's progress too
    assert "lr = blr 0.0005 x 8/256" in output  # 4 per process x 2 processes
    results = json.loads((out / "results.json").read_text())
    assert len(results["history"]) == 1 and 0 <= results["top1"] <= 100
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "results.json"]
    assert [r["task"] for r in json.loads((export / "mimzoo.json").read_text())["results"]] == ["finetune"]
