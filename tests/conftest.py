"""Shared fixtures: tiny real data (decoded from the built-in CIFAR-10 sample) and CLI helpers."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mimzoo.data.sources import BUILTIN_SAMPLE, NpzPackSource

TINY_ARCH = "vit_tiny_patch4_32"
REPO = Path(__file__).resolve().parents[1]


def save_bomb(path: Path, side: int) -> Path:
    """A decompression bomb: a ~70-byte PNG whose header claims side x side RGB pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """48 real photos as class-subfolder PNG/JPEG files (two classes, 36x40 px so crops really resize)."""
    root = tmp_path_factory.mktemp("images")
    source = NpzPackSource(BUILTIN_SAMPLE)
    for i in range(48):
        label = int(source.labels[i * 40])
        img = source.load(i * 40).resize((40, 36))
        folder = root / source.classes[label]
        folder.mkdir(exist_ok=True)
        img.save(folder / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture(scope="session")
def npz_pack(tmp_path_factory) -> Path:
    """A 40-image pack in the shared-data format (train_jpeg / train_offsets / train_labels)."""
    data = np.load(BUILTIN_SAMPLE)
    offsets = data["train_offsets"][:41]
    path = tmp_path_factory.mktemp("pack") / "pack.npz"
    np.savez(path, train_jpeg=data["train_jpeg"][: offsets[-1]], train_offsets=offsets,
             train_labels=data["train_labels"][:40], classes=data["classes"])
    return path


@pytest.fixture(scope="session")
def npz_with_test(tmp_path_factory):
    """36 training and 12 test images of the built-in sample, spread over its classes."""
    data, arrays = np.load(BUILTIN_SAMPLE), {}
    for split, count in (("train", 36), ("test", 12)):
        offsets, buffer = data[f"{split}_offsets"], data[f"{split}_jpeg"]
        picks = [int(i) % (len(offsets) - 1) for i in np.arange(count) * 7919]  # spread over class-sorted files
        chunks = [buffer[offsets[i]:offsets[i + 1]] for i in picks]
        arrays.update({f"{split}_jpeg": np.concatenate(chunks), f"{split}_labels": data[f"{split}_labels"][picks],
                       f"{split}_offsets": np.concatenate([[0], np.cumsum([len(c) for c in chunks])])})
    path = tmp_path_factory.mktemp("pack") / "with_test.npz"
    np.savez(path, classes=data["classes"], **arrays)
    return path


@pytest.fixture()
def cli():
    """Invoke the Typer app in-process; returns the click Result."""
    from mimzoo_cli.app import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def save_run_checkpoint(path: Path, config: dict) -> None:
    """A checkpoint with every entry pretraining's has (empty but for ``config``): what a resume reads first."""
    from mimzoo.engine.checkpoint import save_checkpoint

    entries = dict.fromkeys(("model", "optimizer", "scheduler", "rng"), {}) | {"step": 0, "skipped": 0}
    save_checkpoint(path, {**entries, "config": config})


def tiny_pretrain_args(data: Path, out: Path, *extra) -> list[str]:
    return ["pretrain", "--data", data, "--arch", TINY_ARCH, "--out", out, "--batch-size", "8", "--epochs", "1",
            "--warmup-epochs", "0", "--workers", "0", "--blr", "1e-3", *extra]


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, npz_pack) -> tuple[Path, str]:
    """One finished tiny MAE run (5 steps, a metrics line per step) and its CLI output; copy it before changing it."""
    from mimzoo_cli.app import app

    out = tmp_path_factory.mktemp("run") / "r"
    result = CliRunner().invoke(app, [str(a) for a in tiny_pretrain_args(npz_pack, out, "--log-every", "1")])
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.fixture()
def export(finished_run, tmp_path) -> Path:
    """A private copy of the tiny run's export, so recorded results (or a test's damage) do not leak between tests."""
    return Path(shutil.copytree(finished_run[0] / "export", tmp_path / "export"))


@pytest.fixture()
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty, offline Hugging Face cache and no token, here (huggingface_hub reads its constants per call) and
    in subprocesses (through the environment)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    settings = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": True, "HF_TOKEN_PATH": str(tmp_path / "no-token")}
    for name, value in settings.items():
        monkeypatch.setattr(constants, name, value)
        monkeypatch.setenv(name, "1" if value is True else value)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return cache


def assert_plain_timm_loads(export: Path) -> None:
    """The export loads as any project loads it, with timm alone (its config.json, strict weights) and encodes an
    image of its input size. (That plain timm needs no mimzoo import is proven in a fresh interpreter by
    test_pretrain_cli and test_hub_push_pull; here the check runs in-process, without an interpreter start.)"""
    import timm
    import torch

    model = timm.create_model(f"local-dir:{export}", pretrained=True, num_classes=0).eval()
    with torch.no_grad():
        features = model(torch.zeros(1, 3, *model.patch_embed.img_size))
    assert features.shape == (1, model.num_features) and torch.isfinite(features).all()


def torchrun(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    """``mimzoo ARGS`` in 2 CPU processes under torchrun, run from ``cwd``. torchrun keeps its logs in a temp folder of
    its own (torchelastic_*), which goes beside ``cwd`` in pytest's base folder rather than in the machine's /tmp."""
    temp = cwd.parent / f"{cwd.name}-torchrun-tmp"
    temp.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "mimzoo",
           *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(temp)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def run_python(code: str, *args: str, timeout: float = 120, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter (e.g. to prove plain timm needs no mimzoo import), in ``env`` if given."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=tempfile.gettempdir(), env=env)


def official_side_by_side_loss(model: torch.nn.Module, batch: int = 4, size: int = 32) -> torch.Tensor:
    """The setup of the pinned side-by-side runs against the official code (docs/parity.md), in fp64: every
    trainable weight drawn from its name's order (whatever the initialisation draws; the frozen sin-cos positions
    stay), a seeded batch of ``batch`` images of ``size`` px and seeded mask noise (the official forwards draw
    torch.rand(N, L) first too). Returns the loss, its gradients computed."""
    model = model.double()
    with torch.no_grad():
        for i, (_, p) in enumerate(sorted(model.named_parameters())):
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64) * 0.05)
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.manual_seed(5)
    loss = model(images).loss
    loss.backward()
    return loss

