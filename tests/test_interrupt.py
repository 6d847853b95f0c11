"""Ctrl-C (or SIGTERM) says where a run stopped and exits 130 (143) with its last checkpoint kept; --resume continues
exactly; a diverging probe and a resume with nothing to resume stop with one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from test_classify import CPU, tiny_backbone
from test_pretrain_cli import error_line
from timm.utils import random_seed

from conftest import TINY_ARCH, tiny_pretrain_args
from mimzoo.data.labeled import open_labeled
from mimzoo.engine.finetune import FinetuneConfig, finetune
from mimzoo.engine.report import SilentReporter
from mimzoo.errors import Interrupted

PROBE = ["--workers", "0", "--device", "cpu", "--val-fraction", "0.25", "--warmup-epochs", "0", "--batch-size", "8"]


# Ctrl-C from a terminal; SIGTERM as a scheduler or `timeout` sends it, to the whole process group, loader workers
# included
@pytest.mark.parametrize("stop,workers", [(signal.SIGINT, 0), (signal.SIGTERM, 2)], ids=["sigint", "sigterm"])
def test_a_stop_mid_pretraining_exits_128_plus_the_signal_and_keeps_the_checkpoint(npz_pack, tmp_path, stop, workers):
    out = tmp_path / "r"
    command = [sys.executable, "-m", "mimzoo", "pretrain", "--data", str(npz_pack), "--arch", TINY_ARCH, "--out",
               str(out), "--batch-size", "4", "--epochs", "50", "--warmup-epochs", "0", "--workers", str(workers),
               "--ckpt-every", "2"]

    def own_group() -> None:
        os.setpgrp()
        # a shell's background job ignores SIGINT, and Python then installs no KeyboardInterrupt handler: restore it
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=own_group)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, stop)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + stop, stderr  # as the shell reports a process the signal stopped
    assert "Traceback" not in stderr and "error:" not in stderr
    line = next(line for line in stderr.splitlines() if line.startswith("interrupted at step"))
    step = int(line.split()[3])
    # the stop saved every finished step
    assert line == f"interrupted at step {step} of 500; continue with --resume (from the checkpoint of step {step})"
    assert "500/500" not in stdout  # the log stays where the run got to
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == step >= 2 and not (out / "export").exists()


@pytest.fixture
def ctrl_c_interrupts():
    """SIGINT raises KeyboardInterrupt, as in a terminal, also when pytest runs as a background job (which ignores
    it: Python then installs no handler)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_stop_keeps_every_finished_step_and_the_resume_is_exact(cli, npz_pack, tmp_path, monkeypatch,
                                                                   ctrl_c_interrupts):
    """A stop in a step's forward undoes that step (its masks' random draws too); one during the update waits for
    it; either way the checkpoint holds every finished step, and the resumed run ends as an uninterrupted one."""
    from timm.scheduler import CosineLRScheduler

    from mimzoo.methods.mae import MAE

    args = ("--epochs", "2", "--seed", "5", "--log-every", "1")  # 10 steps, no checkpoint before the end but a stop's
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    assert cli(*tiny_pretrain_args(npz_pack, reference, *args)).exit_code == 0

    forward, forwards = MAE.forward, []

    def stop_in_the_third_forward(self, images):
        out = forward(self, images)  # the step's masks are drawn
        forwards.append(out)
        if len(forwards) == 3:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(MAE, "forward", stop_in_the_third_forward)
    result = cli(*tiny_pretrain_args(npz_pack, stopped, *args))
    assert result.exit_code == 130, result.output
    assert "interrupted at step 2 of 10; continue with --resume (from the checkpoint of step 2)" in result.output
    monkeypatch.undo()

    step_update = CosineLRScheduler.step_update

    def ctrl_c_in_update_6(self, num_updates, *rest):
        if num_updates == 6:  # after step 6's optimizer.step(), inside the update
            signal.raise_signal(signal.SIGINT)
        return step_update(self, num_updates, *rest)

    monkeypatch.setattr(CosineLRScheduler, "step_update", ctrl_c_in_update_6)
    result = cli(*tiny_pretrain_args(npz_pack, stopped, *args), "--resume")
    assert result.exit_code == 130, result.output
    assert "interrupted at step 6 of 10; continue with --resume (from the checkpoint of step 6)" in result.output
    monkeypatch.undo()

    assert cli(*tiny_pretrain_args(npz_pack, stopped, *args), "--resume").exit_code == 0
    a, b = load_file(stopped / "export" / "model.safetensors"), load_file(reference / "export" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in b)
    lines = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
             for run in (stopped, reference)]
    assert [line["step"] for line in lines[0]] == list(range(1, 11))  # the line of step 6 was written before the stop
    assert [line["loss"] for line in lines[0]] == [line["loss"] for line in lines[1]]


def test_a_second_stop_during_the_stops_save_keeps_the_last_checkpoint(cli, npz_pack, tmp_path, monkeypatch):
    from mimzoo.engine.pretrain import _Trainer
    from mimzoo.methods.mae import MAE

    forward, forwards, save, saves = MAE.forward, [], _Trainer._save, []

    def stop_in_the_fourth_forward(self, images):
        forwards.append(1)
        if len(forwards) == 4:
            raise KeyboardInterrupt
        return forward(self, images)

    def second_stop_in_the_second_save(self):
        saves.append(self.step)
        if len(saves) == 2:
            raise KeyboardInterrupt
        save(self)

    monkeypatch.setattr(MAE, "forward", stop_in_the_fourth_forward)
    monkeypatch.setattr(_Trainer, "_save", second_stop_in_the_second_save)
    result = cli(*tiny_pretrain_args(npz_pack, tmp_path / "r", "--ckpt-every", "2"))
    assert result.exit_code == 130 and saves == [2, 3]
    assert "interrupted at step 3 of 5; continue with --resume (from the checkpoint of step 2)" in result.output
    assert torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)["step"] == 2


def test_a_stop_inside_the_non_finite_check_leaves_the_steps_unchecked(monkeypatch, tmp_path):
    """The stop's own save checks them again, so a non-finite step is never saved."""
    from types import SimpleNamespace

    from mimzoo.engine import pretrain
    from mimzoo.errors import MimzooError

    def interrupted(value):
        raise KeyboardInterrupt

    trainer = SimpleNamespace(pending=[torch.tensor([0.5, 1.0]), torch.tensor([float("nan"), 1.0])], step=2,
                              optimizer=torch.optim.SGD([torch.zeros(1, requires_grad=True)]), run_dir=tmp_path)
    monkeypatch.setattr(pretrain, "math", SimpleNamespace(isfinite=interrupted))
    with pytest.raises(KeyboardInterrupt):
        pretrain._Trainer._check_finite(trainer)
    assert len(trainer.pending) == 2
    monkeypatch.undo()
    with pytest.raises(MimzooError, match="non-finite loss \\(nan\\) or gradient norm at step 2"):
        pretrain._Trainer._check_finite(trainer)


class StopAtStep(SilentReporter):
    """Ctrl-C at a given training step (the reporter is told of every step)."""

    def __init__(self, step: int) -> None:
        self.stop_at = step

    def update(self, step, logs) -> None:
        if step == self.stop_at:
            raise KeyboardInterrupt


def test_finetune_resume_is_exact(npz_pack, tmp_path):
    splits = open_labeled(str(npz_pack), val_fraction=0.25)

    def run(out, resume=False, reporter=None):
        random_seed(3)  # as the downstream commands do: torch, numpy (Mixup) and Python (RandAugment, erasing)
        cfg = FinetuneConfig(epochs=2, warmup_epochs=1, batch_size=8, workers=0, out=str(out), resume=resume,
                             reprob=0.5)
        return finetune(tiny_backbone(), splits, cfg, CPU, reporter or SilentReporter())

    reference = run(tmp_path / "reference")
    with pytest.raises(Interrupted, match=r"interrupted at step 4 of 6; continue with --resume \(from the checkpoint "
                                          r"of epoch 1\)"):
        run(tmp_path / "resumed", reporter=StopAtStep(4))  # 3 steps an epoch: stopped inside the second
    resumed = run(tmp_path / "resumed", resume=True)
    assert resumed["history"] == reference["history"]
    ours = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["model"]
    theirs = torch.load(tmp_path / "reference" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_interrupted_linprobe_exits_130_then_resumes(cli, export, npz_pack, tmp_path, monkeypatch):
    from mimzoo_cli.progress import RichReporter

    original = RichReporter.update

    def interrupt_in_epoch_2(self, step, logs):
        if step > 3 and logs:  # the cached probe reports once an epoch (3 steps)
            raise KeyboardInterrupt
        original(self, step, logs)

    monkeypatch.setattr(RichReporter, "update", interrupt_in_epoch_2)
    args = ["linprobe", export, "--data", npz_pack, *PROBE, "--epochs", "3", "--out", tmp_path / "lp"]
    result = cli(*args)
    assert result.exit_code == 130, result.output
    assert "interrupted at step 6 of 9; continue with --resume (from the checkpoint of epoch 1)" in result.output
    assert not (tmp_path / "lp" / "results.json").exists()
    monkeypatch.setattr(RichReporter, "update", original)
    resumed = cli(*args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "resumed" in resumed.output
    assert len(json.loads((tmp_path / "lp" / "results.json").read_text())["history"]) == 3


def test_linprobe_resume_with_nothing_to_resume(cli, export, npz_pack, tmp_path):
    result = cli("linprobe", export, "--data", npz_pack, *PROBE, "--epochs", "1", "--out", tmp_path / "lp",
                 "--resume")
    assert "no checkpoint to resume in" in error_line(result)


def test_diverging_probe_records_nothing(cli, export, npz_pack, tmp_path):
    card, record = (export / "README.md").read_text(), (export / "mimzoo.json").read_text()
    # SGD's weight decay at lr 0.3 x 1e4 multiplies the weights by -3000 a step: they overflow within a few epochs
    result = cli("linprobe", export, "--data", npz_pack, *PROBE, "--epochs", "10", "--optimizer", "sgd",
                 "--blr", "10", "--weight-decay", "1e4", "--out", tmp_path / "lp")
    line = error_line(result)
    assert "non-finite training loss in epoch" in line and "lower --blr" in line
    assert (export / "README.md").read_text() == card and (export / "mimzoo.json").read_text() == record
    assert not (tmp_path / "lp" / "results.json").exists()


def test_a_held_ctrl_c_comes_after_the_block_and_never_replaces_its_error(ctrl_c_interrupts):
    from mimzoo.engine.stops import HeldStops

    done = []
    with HeldStops() as stops:
        with pytest.raises(KeyboardInterrupt):
            with stops.hold():
                signal.raise_signal(signal.SIGINT)
                done.append("the block ran on")
        assert done == ["the block ran on"]
        with pytest.raises(ValueError):
            with stops.hold():
                signal.raise_signal(signal.SIGINT)
                raise ValueError("the update failed")
        with stops.hold():  # nothing is left held from the failed block
            pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
