"""The downstream commands from the CLI on a real tiny export: results, model-card rows, one-line errors."""

import json
import shutil

import pytest
from test_pretrain_cli import error_line
from test_segment import write_generic

from conftest import save_bomb


def recorded(export) -> list[dict]:
    return json.loads((export / "mimzoo.json").read_text())["results"]


def test_knn_records_its_accuracy_in_the_card(cli, export, image_folder, tmp_path):
    result = cli("knn", export, "--data", image_folder, "--val-fraction", "0.25", "--limit", "10", "--workers", "0",
                 "--out", tmp_path / "knn")
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "knn" / "results.json").read_text())
    top1, measured = results["top1"], results["measured"]
    assert results["splits"]["train"]["images"] == 10 and measured["model_args"]["patch_size"] == 4
    assert {k: v for k, v in measured.items() if k != "model_args"} == {
        "backbone": str(export), "architecture": "vit_tiny_patch16_224", "weights": str(export / "model.safetensors"),
        "revision": None, "data": str(image_folder), "val_fraction": 0.25, "limit": 10, "seed": 0}
    assert [(r["task"], r["metric"], r["value"], r["split"]) for r in recorded(export)] == [
        ("knn", "knn_accuracy", round(top1, 2), "val-carve")]
    assert "k-NN" in (export / "README.md").read_text()


def test_linprobe_and_finetune_report_the_last_epoch_and_the_hub_tells_tasks_apart(cli, export, npz_with_test,
                                                                                    tmp_path):
    from huggingface_hub import ModelCard

    common = ["--data", npz_with_test, "--workers", "0", "--epochs", "2", "--warmup-epochs", "0", "--batch-size", "8"]
    probe = cli("linprobe", export, *common, "--out", tmp_path / "lp")  # no carve: epochs measured on test
    assert probe.exit_code == 0, probe.output
    results = json.loads((tmp_path / "lp" / "results.json").read_text())
    assert f"test top-1 {results['top1']:.2f} (epoch 2, the last)" in probe.output and "best" not in probe.output
    assert results["top1"] == results["history"][-1]["top1"] and results["split"] == "test"
    tune = cli("finetune", export, *common, "--epochs", "1", "--val-fraction", "0.25", "--out", tmp_path / "ft")
    assert tune.exit_code == 0, tune.output
    results = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert results["split"] == "test" and results["val"]["split"] == "val-carve"
    assert "test top-1" in tune.output and "val-carve: last" in tune.output
    assert cli("knn", export, "--data", npz_with_test, "--workers", "0", "--out", tmp_path / "knn").exit_code == 0
    # the anchor's protocol: AdamW at its own default lr, and a row of its own beside MAE's probe
    adamw = cli("linprobe", export, *common, "--optimizer", "adamw", "--out", tmp_path / "lp-adamw")
    assert adamw.exit_code == 0, adamw.output
    config = json.loads((tmp_path / "lp-adamw" / "results.json").read_text())["config"]
    assert (config["optimizer"], config["blr"], config["lr"]) == ("adamw", 1e-3, 1e-3 * 8 / 256)
    card = ModelCard.load(export / "README.md").data
    rows = {(r.task_type, r.metric_type, r.dataset_split) for r in card.eval_results}
    assert rows == {("image-classification", kind, "test") for kind in (
        "linear_probe_accuracy", "linear_probe_adamw_accuracy", "finetune_accuracy", "knn_accuracy")}
    assert {r.metric_name for r in card.eval_results} == {"Linear-probe top-1", "Linear-probe top-1 (AdamW)",
                                                          "Fine-tune top-1", "kNN top-1 (k=20, T=0.07)"}
    assert {r.dataset_type for r in card.eval_results} == {"with-test"}  # a local pack: no made-up Hub id


def test_a_short_run_warms_up_for_a_quarter_of_its_epochs(cli, export, image_folder, tmp_path):
    # no --warmup-epochs: the recipe's warm-up is cut to a quarter of the one epoch, and timm says nothing
    common = ["--data", image_folder, "--val-fraction", "0.25", "--workers", "0", "--epochs", "1", "--batch-size", "8"]
    probe = cli("linprobe", export, *common, "--out", tmp_path / "lp")
    assert probe.exit_code == 0, probe.output
    assert "no effect" not in probe.output
    assert json.loads((tmp_path / "lp" / "results.json").read_text())["config"]["warmup_epochs"] == 0.25
    assert "--warmup-epochs 2 must be between 0 and --epochs (1)" in error_line(
        cli("finetune", export, *common, "--warmup-epochs", "2", "--out", tmp_path / "ft2"))


def test_segment_records_miou(cli, export, tmp_path):
    data = write_generic(tmp_path / "seg", splits=(("train", 4), ("val", 2)))
    result = cli("segment", export, "--data", data, "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "2",
                 "--crop-size", "32", "--blr", "0.1", "--workers", "0", "--limit", "2", "--out", tmp_path / "seg-out")
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "seg-out" / "results.json").read_text())
    assert results["measured"]["limit"] == 2 and results["split"] == "val"
    assert (results["splits"]["train"]["images"], results["splits"]["val"]["images"]) == (2, 2)
    assert "val mIoU" in result.output and (tmp_path / "seg-out" / "predictions.png").exists()
    assert "lr = blr 0.1 x 2/256" in " ".join(result.output.split())
    assert [(r["task"], r["metric"]) for r in recorded(export)] == [("segment", "mean_iou")]
    line = error_line(cli("segment", export, "--data", data, "--crop-size", "40", "--workers", "0",
                          "--out", tmp_path / "seg-bad"))
    assert "--crop-size 40 must be a multiple of 32" in line
    line = error_line(cli("segment", export, "--data", data, "--crop-size", "96", "--workers", "0",
                          "--out", tmp_path / "seg-bad"))  # 32 px images, at most 64 at the top random scale 2
    assert "--crop-size 96 is larger than any training image becomes (short side at most 64 px" in line
    assert not (tmp_path / "seg-bad").exists()


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
    assert f"unreadable image: {bomb} (Image size (900000000 pixels) exceeds limit" in result.output
    assert f"unreadable image: {broken} (" in result.output
    for path in data.rglob("*.*"):
        path.write_bytes(b"")
    assert "images is readable, e.g. " in error_line(cli("knn", export, *args, "--out", tmp_path / "knn2"))


def test_off_a_terminal_training_lines_give_the_loss_and_the_rate(cli, npz_pack, tmp_path):
    result = cli("finetune", "random:vit_tiny_patch4_32", "--data", npz_pack, "--workers", "0", "--epochs", "1",
                 "--warmup-epochs", "0", "--batch-size", "2", "--val-fraction", "0.5", "--out", tmp_path / "ft")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("fine-tune 10/10 "))
    words = line.split()
    assert words[2] == "loss" and words[4] == "img_per_s" and float(words[5]) > 0, line
