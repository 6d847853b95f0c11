"""A run killed with SIGKILL mid-epoch and resumed ends with exactly the weights of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_ARCH


def pretrain_cmd(data, out, *extra):
    return [sys.executable, "-m", "mimzoo", "pretrain", "--data", str(data), "--arch", TINY_ARCH, "--out", str(out),
            "--batch-size", "4", "--epochs", "2", "--warmup-epochs", "1", "--workers", "0", "--ckpt-every", "3",
            "--log-every", "1", "--seed", "7", *extra]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(cli, image_folder, tmp_path):
    # only the killed run needs a process of its own; the reference and the resume run in this one
    reference = tmp_path / "reference"
    assert cli(*pretrain_cmd(image_folder, reference)[3:]).exit_code == 0

    killed = tmp_path / "killed"
    proc = subprocess.Popen(pretrain_cmd(image_folder, killed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (killed / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "export").exists()
    step_at_kill = torch.load(killed / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < step_at_kill < 12  # 12 steps per epoch: killed inside the first epoch

    resumed = cli(*pretrain_cmd(image_folder, killed, "--resume")[3:])
    assert resumed.exit_code == 0, resumed.output
    assert f"resumed {killed} at step" in resumed.output

    ours = torch.load(killed / "checkpoint.pt", weights_only=True)["model"]
    theirs = torch.load(reference / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    a, b = load_file(killed / "export" / "model.safetensors"), load_file(reference / "export" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in b)
    steps = [line.split(",")[0] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == len(set(steps)) == 24  # each step logged once despite the kill
