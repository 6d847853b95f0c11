"""Broken files in every command: one `error:` line naming the file and the fix, exit 1, no traceback, and nothing
written (no results.json, no card change, no export)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_pretrain_cli import error_line
from test_segment import write_generic

from mimzoo.data.sources import BUILTIN_SAMPLE

SAMPLE = np.load(BUILTIN_SAMPLE)
OFFSETS = SAMPLE["train_offsets"][:17]  # 16 real JPEGs
JPEG = SAMPLE["train_jpeg"][: OFFSETS[-1]]
LABELS = SAMPLE["train_labels"][:16]
QUICK = ["--workers", "0", "--device", "cpu", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "8"]


def pack(path: Path, **arrays) -> Path:
    """A labelled pack (train and test: the same 16 images), with some arrays replaced (None: left out)."""
    values = dict(train_jpeg=JPEG, train_offsets=OFFSETS, train_labels=LABELS, test_jpeg=JPEG, test_offsets=OFFSETS,
                  test_labels=LABELS, classes=SAMPLE["classes"])
    values.update(arrays)
    np.savez(path, **{k: v for k, v in values.items() if v is not None})
    return path


@pytest.fixture()
def run(finished_run, tmp_path) -> Path:
    """A copy of a finished tiny run folder without its export, to break."""
    folder = Path(shutil.copytree(finished_run[0], tmp_path / "run"))
    shutil.rmtree(folder / "export")
    return folder


def edit_json(path: Path, change) -> None:
    values = json.loads(path.read_text())
    change(values)
    path.write_text(json.dumps(values))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# ---- a broken backbone, in every downstream command ------------------------------------------------------------
BROKEN_EXPORTS = {
    "config not utf-8": (lambda e: (e / "config.json").write_bytes(b"\xff\xfe{"), "config.json"),
    "config model_args not an object": (
        lambda e: edit_json(e / "config.json", lambda c: c.update(model_args="big")), "'model_args'"),
    "architecture not a name": (lambda e: edit_json(e / "config.json", lambda c: c.update(architecture=5)),
                                "'architecture'"),
    "record not utf-8": (lambda e: (e / "mimzoo.json").write_bytes(b"\xff\xfe{"), "mimzoo.json"),
    "record results not a list": (lambda e: edit_json(e / "mimzoo.json", lambda r: r.update(results=5)),
                                  "mimzoo.json"),
}


def downstream_args(command: str, backbone: Path, out: Path, data: Path) -> list:
    if command == "knn":
        return ["knn", backbone, "--data", data, "--workers", "0", "--device", "cpu", "--out", out]
    if command == "segment":
        return ["segment", backbone, "--data", data, *QUICK, "--batch-size", "2", "--crop-size", "32", "--out", out]
    return [command, backbone, "--data", data, *QUICK, "--out", out]


@pytest.fixture(scope="module")
def seg_folder(tmp_path_factory) -> Path:
    """A generic segmentation folder (classes.txt, train and val image/mask pairs)."""
    return write_generic(tmp_path_factory.mktemp("seg"), splits=(("train", 4), ("val", 2)))


# every kind through knn; the other commands share the loading (one kind each shows they check before working)
BACKBONE_CASES = [("knn", kind) for kind in BROKEN_EXPORTS] + [
    ("linprobe", "record not utf-8"), ("finetune", "config model_args not an object"), ("segment", "config not utf-8")]


@pytest.mark.parametrize("command,kind", BACKBONE_CASES)
def test_broken_backbone(cli, export, tmp_path, npz_pack, seg_folder, command, kind):
    breaks, named = BROKEN_EXPORTS[kind]
    breaks(export)
    card = (export / "README.md").read_text()
    data = seg_folder if command == "segment" else pack(tmp_path / "pack.npz")
    line = error_line(cli(*downstream_args(command, export, tmp_path / "out", data)))
    assert named in line
    assert not (tmp_path / "out" / "results.json").exists()  # stopped before the work, not after
    assert (export / "README.md").read_text() == card


# ---- broken classification data (knn, linprobe and finetune read it alike) -------------------------------------
def _empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _text(path: Path) -> Path:
    path.write_text("not a pack\n")  # numpy takes it for a pickle and suggests allow_pickle
    return path


def _truncated(path: Path) -> Path:
    truncate(pack(path))
    return path


def _pickled(path: Path) -> Path:
    np.savez(path, train_jpeg=np.array([object()], dtype=object), train_offsets=np.array([0, 1]))
    return path


def _npy(path: Path) -> Path:
    with open(path, "wb") as f:  # np.save would add .npy to the name
        np.save(f, np.zeros(3))
    return path


BROKEN_PACKS = {
    "empty file": (_empty_file, "is not an npz pack (the file is empty)"),
    "truncated": (_truncated, "is not an npz pack (a truncated zip archive"),
    "text": (_text, "is not an npz pack (not a zip archive)"),
    "pickled objects": (_pickled, "cannot read"),
    "a .npy array": (_npy, "is a single .npy array, not an npz pack"),
    "offsets past the bytes": (lambda p: pack(p, train_offsets=OFFSETS * 100), "train_offsets"),
    "offsets 2-D": (lambda p: pack(p, train_offsets=np.zeros((3, 3), np.int64)), "train_offsets"),
    "offsets float": (lambda p: pack(p, train_offsets=OFFSETS.astype(float)), "train_offsets"),
    "labels too few": (lambda p: pack(p, train_labels=LABELS[:5]), "train_labels"),
    "labels float": (lambda p: pack(p, train_labels=np.full(16, 0.5)), "train_labels"),
    "labels strings": (lambda p: pack(p, train_labels=np.array(["a"] * 16)), "train_labels"),
    "label past the classes": (lambda p: pack(p, train_labels=np.full(16, 99)), "label 99"),
    "evaluation label past the classes": (lambda p: pack(p, test_labels=np.full(16, 99)), "label 99 in the test"),
}


@pytest.mark.parametrize("kind", list(BROKEN_PACKS))
def test_broken_pack_knn(cli, export, tmp_path, kind):
    make, named = BROKEN_PACKS[kind]
    line = error_line(cli(*downstream_args("knn", export, tmp_path / "out", make(tmp_path / "pack.npz"))))
    assert named in line and "pack.npz" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command,kind", [("linprobe", "label past the classes"), ("finetune", "offsets float")])
def test_broken_pack_training(cli, export, tmp_path, command, kind):
    make, named = BROKEN_PACKS[kind]
    assert named in error_line(cli(*downstream_args(command, export, tmp_path / "out", make(tmp_path / "pack.npz"))))
    assert not (tmp_path / "out" / "results.json").exists()


def test_broken_pack_pretrain(cli, tmp_path):
    data = _truncated(tmp_path / "pack.npz")
    line = error_line(cli("pretrain", "--data", data, "--arch", "vit_tiny_patch4_32", "--out", tmp_path / "r"))
    assert "pack.npz" in line
    assert not (tmp_path / "r").exists()


# ---- broken segmentation data -----------------------------------------------------------------------------------
def _seg_copy(seg_folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(seg_folder, tmp_path / "seg"))


def _seg_pack(path: Path, masks: int) -> Path:
    np.savez(path, train_jpeg=JPEG, train_offsets=OFFSETS, train_y=np.zeros((masks, 32, 32), np.uint8),
             val_jpeg=JPEG, val_offsets=OFFSETS, val_y=np.zeros((16, 32, 32), np.uint8), classes=np.array(["a", "b"]))
    return path


BROKEN_SEGMENTATION = {
    "missing evaluation split": (lambda s, t: _seg_copy(s, t), ["--eval-split", "test"], "no 'test' split"),
    "classes.txt not utf-8": (lambda s, t: (_seg_copy(s, t) / "classes.txt").write_bytes(b"\xff\xfe") and t / "seg",
                              [], "classes.txt"),
    "classes.txt empty": (lambda s, t: (_seg_copy(s, t) / "classes.txt").write_text("\n") and t / "seg", [],
                          "names no classes"),
    "pack truncated": (lambda s, t: (truncate(_seg_pack(t / "seg.npz", 16)), t / "seg.npz")[1], [], "seg.npz"),
    "pack masks not one per image": (lambda s, t: _seg_pack(t / "seg.npz", 3), [], "train_y"),
}


@pytest.mark.parametrize("kind", list(BROKEN_SEGMENTATION))
def test_broken_segmentation_data(cli, export, seg_folder, tmp_path, kind):
    make, extra, named = BROKEN_SEGMENTATION[kind]
    data = make(seg_folder, tmp_path)
    line = error_line(cli(*downstream_args("segment", export, tmp_path / "out", data), *extra))
    assert named in line
    assert not (tmp_path / "out").exists()


# ---- broken run folders and exports: export, visualize, plot, pretrain --resume ---------------------------------
def _checkpoint_without_config(run: Path) -> None:
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    del state["config"]
    torch.save(state, run / "checkpoint.pt")


TRUNCATED = "checkpoint.pt (a truncated zip archive: the end of the file is missing)"
BROKEN_RUNS = {
    "export truncated checkpoint": (lambda r: truncate(r / "checkpoint.pt"), ["export"], TRUNCATED),
    "export garbage checkpoint": (lambda r: (r / "checkpoint.pt").write_bytes(b"hello"), ["export"],
                                  "checkpoint.pt (neither a zip archive, as torch.save writes, nor a pickle)"),
    "export empty checkpoint": (lambda r: (r / "checkpoint.pt").write_bytes(b""), ["export"],
                                "checkpoint.pt (the file is empty)"),
    "export checkpoint without config": (_checkpoint_without_config, ["export"], "not a mimzoo checkpoint"),
    "export run config not utf-8": (lambda r: (r / "config.json").write_bytes(b"\xff"), ["export"], "config.json"),
    "visualize truncated checkpoint": (lambda r: truncate(r / "checkpoint.pt"), ["visualize"], TRUNCATED),
    "resume truncated checkpoint": (lambda r: truncate(r / "checkpoint.pt"), ["pretrain", "--resume", "--out"],
                                    TRUNCATED),
}


@pytest.mark.parametrize("kind", list(BROKEN_RUNS))
def test_broken_run_folder(cli, run, tmp_path, kind):
    breaks, command, named = BROKEN_RUNS[kind]
    breaks(run)
    line = error_line(cli(*command, run, *(["--out", tmp_path / "v.png"] if command == ["visualize"] else [])))
    assert named in line
    assert not (run / "export").exists() and not (tmp_path / "v.png").exists()


@pytest.mark.parametrize("metrics", [b"\xff\xfe\n", b'[1]\n"x"\n'])
def test_plot_skips_what_is_not_a_metrics_record(cli, run, tmp_path, metrics):
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(metrics)
    result = cli("plot", run, "--out", tmp_path / "curves.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "curves.png").is_file()


BROKEN_FOR_VISUALIZE = {
    "truncated pretrainer": (lambda e: truncate(e / "pretrainer.safetensors"), "pretrainer.safetensors"),
    "record without config": (lambda e: edit_json(e / "mimzoo.json", lambda r: r.pop("config")), "mimzoo.json"),
}


@pytest.mark.parametrize("kind", list(BROKEN_FOR_VISUALIZE))
def test_broken_export_visualize(cli, export, tmp_path, kind):
    breaks, named = BROKEN_FOR_VISUALIZE[kind]
    breaks(export)
    assert named in error_line(cli("visualize", export, "--out", tmp_path / "v.png"))
    assert not (tmp_path / "v.png").exists()


# ---- push, pull, import ----------------------------------------------------------------------------------------
def test_push_of_a_broken_export(cli, export, tmp_path):
    (export / "config.json").write_bytes(b"\xff\xfe{")
    line = error_line(cli("push", export, "--repo-id", "org/tiny", "--backend-dir", tmp_path / "hub"))
    assert "config.json" in line
    assert not any((tmp_path / "hub").rglob("model.safetensors"))


def test_pull_of_a_broken_repo(cli, export, tmp_path, hf_cache):
    assert cli("push", export, "--repo-id", "org/tiny", "--backend-dir", tmp_path / "hub").exit_code == 0
    for config in (tmp_path / "hub").rglob("config.json"):
        config.unlink()  # a blob and its snapshot link
        config.write_bytes(b"\xff\xfe{")
    assert "config.json" in error_line(cli("pull", "org/tiny", "--backend-dir", tmp_path / "hub"))


def test_import_of_a_broken_transformers_folder(cli, tmp_path):
    source = tmp_path / "vit-mae"
    source.mkdir()
    (source / "config.json").write_bytes(b"\xff\xfe{")
    (source / "model.safetensors").write_bytes(b"")
    assert "config.json" in error_line(cli("import", source, "--out", tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    (tmp_path / "notes.pth").write_text("hi\n")  # torch's unpickler fails on it with a KeyError
    line = error_line(cli("import", tmp_path / "notes.pth", "--out", tmp_path / "out"))
    assert "notes.pth as a PyTorch checkpoint (neither a zip archive, as torch.save writes, nor a pickle)" in line
    assert not (tmp_path / "out").exists()
