"""The downstream commands from the CLI on a real tiny export: results, model-card rows, one-line errors."""

import json
import shutil

import pytest
from test_pretrain_cli import error_line
from test_segment import write_generic

from conftest import save_bomb


@pytest.fixture()
def export(finished_run, tmp_path):
    """A private copy of the tiny run's export, so recorded results do not leak between tests."""
    return shutil.copytree(finished_run[0] / "export", tmp_path / "export")


def recorded(export) -> list[dict]:
    return json.loads((export / "mimzoo.json").read_text())["results"]


def test_knn_records_its_accuracy_in_the_card(cli, export, image_folder, tmp_path):
    result = cli("knn", export, "--data", image_folder, "--val-fraction", "0.25", "--limit", "10", "--workers", "0",
                 "--out", tmp_path / "knn")
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "knn" / "results.json").read_text())
    top1 = results["top1"]
    measured = results["measured"]
    assert results["config"]["bank"] == 10 and measured["model_args"]["patch_size"] == 4
    assert {k: v for k, v in measured.items() if k != "model_args"} == {
        "backbone": str(export), "architecture": "vit_tiny_patch16_224", "weights": str(export / "model.safetensors"),
        "revision": None, "data": str(image_folder), "train_split": "train", "eval_split": "val",
        "val_fraction": 0.25, "train_images": 10, "eval_images": 10, "limit": 10, "seed": 0}
    assert [(r["task"], r["metric"], r["value"]) for r in recorded(export)] == [("knn", "accuracy", round(top1, 2))]
    assert "k-NN" in (export / "README.md").read_text()


def test_linprobe_and_finetune_report_best_and_last_top1(cli, export, image_folder, tmp_path):
    # no --warmup-epochs: the recipe's warm-up is cut to a quarter of the one epoch, and timm says nothing
    common = ["--data", image_folder, "--val-fraction", "0.25", "--workers", "0", "--epochs", "1", "--batch-size", "8"]
    probe = cli("linprobe", export, *common, "--out", tmp_path / "lp")
    assert probe.exit_code == 0, probe.output
    assert "best top-1" in probe.output and "no effect" not in probe.output
    assert json.loads((tmp_path / "lp" / "results.json").read_text())["config"]["warmup_epochs"] == 0.25
    tune = cli("finetune", export, *common, "--out", tmp_path / "ft")
    assert tune.exit_code == 0, tune.output
    results = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert {"best_top1", "last_top1", "history"} <= results.keys() and results["config"]["warmup_epochs"] == 0.25
    assert "--warmup-epochs 2 must be between 0 and --epochs (1)" in error_line(
        cli("finetune", export, *common, "--warmup-epochs", "2", "--out", tmp_path / "ft2"))
    assert {r["task"] for r in recorded(export)} == {"linprobe", "finetune"}


def test_segment_records_miou(cli, export, tmp_path):
    data = write_generic(tmp_path / "seg", splits=(("train", 4), ("val", 2)))
    result = cli("segment", export, "--data", data, "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "2",
                 "--crop", "32", "--workers", "0", "--limit", "2", "--out", tmp_path / "seg-out")
    assert result.exit_code == 0, result.output
    measured = json.loads((tmp_path / "seg-out" / "results.json").read_text())["measured"]
    assert (measured["train_images"], measured["eval_images"], measured["eval_split"]) == (2, 2, "val")
    assert "val mIoU" in result.output and (tmp_path / "seg-out" / "predictions.png").exists()
    assert [(r["task"], r["metric"]) for r in recorded(export)] == [("segment", "mean_iou")]


@pytest.mark.parametrize("command", ["knn", "linprobe", "finetune", "segment"])
def test_a_backbone_that_does_not_resolve(cli, image_folder, command):
    assert "no backbone 'nowhere/at-all'" in error_line(cli(command, "nowhere/at-all", "--data", image_folder))


def test_unlabelled_data_and_class_mismatch(cli, export, image_folder, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, path in enumerate(sorted(image_folder.rglob("*.png"))[:4]):
        shutil.copy(path, flat / f"{i}.png")
    assert "no labels" in error_line(cli("knn", export, "--data", flat, "--val-fraction", "0.5"))
    classes = sorted(image_folder.iterdir())
    for split, chosen in (("train", classes), ("val", classes[:2])):
        for folder in chosen:
            shutil.copytree(folder, tmp_path / "mismatch" / split / folder.name)
    line = error_line(cli("linprobe", export, "--data", tmp_path / "mismatch"))
    assert "classes of the validation split" in line


@pytest.mark.parametrize("command", ["knn", "linprobe"])
def test_an_unknown_pool_is_refused_with_the_choices(cli, export, image_folder, command):
    result = cli(command, export, "--data", image_folder, "--val-fraction", "0.25", "--pool", "max", "--workers", "0")
    assert result.exit_code == 2 and "'max' is not one of 'token', 'avg'" in result.output


def test_knn_names_unreadable_images_and_stops_when_a_split_has_none(cli, export, image_folder, tmp_path):
    data = shutil.copytree(image_folder, tmp_path / "data")
    files = sorted(data.rglob("*.png"))
    broken = files[0]
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    bomb = save_bomb(files[-1], 30000)
    args = ["--data", data, "--val-fraction", "0.25", "--workers", "0", "--k", "5"]
    result = cli("knn", export, *args, "--out", tmp_path / "knn")
    assert result.exit_code == 0, result.output
    assert f"unreadable image(s): {bomb} (Image size (900000000 pixels) exceeds limit" in result.output
    assert f"unreadable image(s): {broken} (" in result.output
    for path in data.rglob("*.*"):
        path.write_bytes(b"")
    assert "images is readable, e.g. " in error_line(cli("knn", export, *args, "--out", tmp_path / "knn2"))
