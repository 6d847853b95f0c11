"""Export folders: timm layout, one export path, atomicity, the generated card and recorded results."""

import json
import shutil

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from mimzoo.errors import MimzooError
from mimzoo.hub import add_result, export_run, load_pretrainer

EXPORT_FILES = ["README.md", "config.json", "mimzoo.json", "model.safetensors", "pretrainer.safetensors"]


@pytest.fixture()
def export_copy(finished_run, tmp_path):
    """A copy of the session run's export that a test may change."""
    return shutil.copytree(finished_run[0] / "export", tmp_path / "export")


def test_final_export_is_a_hub_ready_timm_folder(finished_run):
    export = finished_run[0] / "export"
    assert sorted(p.name for p in export.iterdir()) == EXPORT_FILES
    config = json.loads((export / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224" and config["num_classes"] == 0
    assert config["model_args"] == {"img_size": 32, "patch_size": 4}
    pcfg = config["pretrained_cfg"]
    assert pcfg["tag"] == "mimzoo_mae_pack_ep1" and pcfg["license"] == "cc-by-nc-4.0"
    assert pcfg["mean"] == [0.485, 0.456, 0.406] and pcfg["std"] == [0.229, 0.224, 0.225]
    assert (pcfg["crop_pct"], pcfg["interpolation"], pcfg["input_size"]) == (1.0, "bicubic", [3, 32, 32])

    encoder, full = load_file(export / "model.safetensors"), load_file(export / "pretrainer.safetensors")
    assert not any("decoder" in k or "mask_token" in k for k in encoder)
    assert any(k.startswith("decoder.") for k in full)
    assert all(torch.equal(encoder[k], full[f"encoder.{k}"]) for k in encoder)

    record = json.loads((export / "mimzoo.json").read_text())
    last = json.loads((finished_run[0] / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["pretraining"] | {"lr": None} == {"steps": 5, "epochs": 1.0, "processes": 1, "effective_batch": 8,
                                                   "lr": None, "final_loss": last["loss"]}
    assert "out" not in record["config"] and "data" not in record["config"]  # no local paths on the Hub


def test_export_command_gives_the_same_folder_as_pretraining(finished_run, cli, tmp_path):
    run = finished_run[0]
    result = cli("export", run, "--out", tmp_path / "again")
    assert result.exit_code == 0, result.output
    for name in ("config.json", "mimzoo.json", "README.md"):
        assert (tmp_path / "again" / name).read_text() == (run / "export" / name).read_text()
    again, first = load_file(tmp_path / "again" / "model.safetensors"), load_file(run / "export" / "model.safetensors")
    assert all(torch.equal(again[k], first[k]) for k in first)


def test_failed_export_leaves_no_half_written_folder(finished_run, tmp_path, monkeypatch):
    def broken_card(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr("mimzoo.hub.export.write_record", broken_card)
    with pytest.raises(RuntimeError):
        export_run(finished_run[0], tmp_path / "new")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary twin

    existing = shutil.copytree(finished_run[0] / "export", tmp_path / "existing")
    before = {p.name: p.read_bytes() for p in existing.iterdir()}
    with pytest.raises(RuntimeError):
        export_run(finished_run[0], existing, dataset="other")
    assert {p.name: p.read_bytes() for p in existing.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["existing"]


def test_card_metadata_round_trips_and_results_fill_the_model_index(export_copy):
    add_result(export_copy, "linprobe", "cifar10-jpeg-q75", 41.0, split="test")
    add_result(export_copy, "segment", "camvid", 0.25, split="test")
    add_result(export_copy, "linprobe", "cifar10-jpeg-q75", 42.5, split="test")  # replaces the first
    add_result(export_copy, "knn", "cifar10-jpeg-q75", 30.5, split="test", metric_name="kNN top-1 (k=20, T=0.07)")

    card = ModelCard.load(export_copy / "README.md")
    data = card.data
    assert (data.library_name, data.pipeline_tag, data.license) == ("timm", "image-feature-extraction", "cc-by-nc-4.0")
    assert {"mimzoo", "mae", "masked-image-modeling", "vision-transformer"} <= set(data.tags)
    assert data.datasets is None  # pretrained on "pack", a local file: no Hub dataset id is made up
    rows = {(r.task_type, r.dataset_type, r.metric_type): r.metric_value for r in data.eval_results}
    assert rows == {("image-classification", "uoft-cs/cifar10", "linear_probe_accuracy"): 42.5,
                    ("image-classification", "uoft-cs/cifar10", "knn_accuracy"): 30.5,
                    ("image-segmentation", "camvid", "mean_iou"): 0.25}
    assert [r["value"] for r in json.loads((export_copy / "mimzoo.json").read_text())["results"]
            if r["task"] == "linprobe"] == [42.5]
    for text in ("| mask_ratio | 0.75 |", "| optimizer steps | 5 |", 'timm.create_model("hf-hub:ORG/NAME"',
                 'smp.DPT(encoder_name="tu-hf-hub:ORG/NAME"', "mimzoo pull ORG/NAME",
                 "Masked Autoencoders Are Scalable Vision Learners",
                 "| Linear probing | cifar10-jpeg-q75 | test | Linear-probe top-1 |",
                 "| k-NN classification | cifar10-jpeg-q75 | test | kNN top-1 (k=20, T=0.07) | 30.5 |",
                 "## Deviations from the reference code", "- Mixed precision is bf16 autocast on CUDA",
                 'timm.create_model("local-dir:PATH", pretrained=True)'):
        assert text in card.text
    assert "HOG cell" not in card.text  # MAE's card lists the common deviations only

    with pytest.raises(MimzooError, match="unknown task 'detect'"):
        add_result(export_copy, "detect", "coco", 1.0)


def test_pretrainer_reloads_for_visualization_and_continued_pretraining(finished_run):
    model = load_pretrainer(finished_run[0] / "export")
    saved = torch.load(finished_run[0] / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_export_of_a_folder_that_is_not_a_run(cli, tmp_path):
    result = cli("export", tmp_path)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"error: {tmp_path} is not a run folder: it has no checkpoint.pt" in result.output


def contents(folder):
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def test_export_replaces_only_a_previous_export(finished_run, cli, tmp_path):
    from test_pretrain_cli import error_line

    run = shutil.copytree(finished_run[0], tmp_path / "run")
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "thesis.tex").write_text("years of work")
    (tmp_path / "notes.txt").write_text("mine")
    edited = shutil.copytree(run / "export", tmp_path / "edited")
    (edited / "notes.md").write_text("my notes on this export")
    half = shutil.copytree(run / "export", tmp_path / "half")
    (half / "mimzoo.json").unlink()
    before = contents(tmp_path)
    for out, message in [
        (tmp_path / "thesis", "holds files that are not part of a mimzoo export (thesis.tex): export into a new"),
        (tmp_path / "notes.txt", "is a file, not a folder"),
        (run, "is a run folder: export into a new or empty folder (the default is RUN/export)"),
        (edited, "holds files that are not part of a mimzoo export (notes.md)"),
        (half, "is not a mimzoo export (it has no mimzoo.json)"),
    ]:
        assert error_line(cli("export", run, "--out", out)).startswith(f"error: {out} {message}")
    assert contents(tmp_path) == before  # nothing deleted, moved or added

    (tmp_path / "empty").mkdir()
    assert cli("export", run, "--out", tmp_path / "empty").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == EXPORT_FILES

    # no message suggests exporting over the folder it names (push of a run folder once suggested --out RUN)
    line = error_line(cli("push", run, "--repo-id", "org/tiny", "--token", "t"))
    assert line == (f"error: {run} is a run folder, not an export: use {run / 'export'} (written at the end of "
                    f"pretraining, or by `mimzoo export {run}`)")
    line = error_line(cli("push", tmp_path / "thesis", "--repo-id", "org/tiny", "--token", "t"))
    assert "--out" not in line and "`mimzoo export RUN` writes one to RUN/export" in line


def test_re_export_keeps_what_the_previous_export_recorded_about_the_same_weights(finished_run, npz_pack, cli,
                                                                                   tmp_path):
    from conftest import tiny_pretrain_args
    from mimzoo.hub.card import update_record

    run = shutil.copytree(finished_run[0], tmp_path / "run")
    export = run / "export"
    add_result(export, "knn", "cifar10", 30.0, split="val")
    add_result(export, "segment", "camvid", 0.25, split="test")
    update_record(export, lambda record: record.update(repo_id="org/tiny"))
    recorded = json.loads((export / "mimzoo.json").read_text())

    for command in (["export", run], tiny_pretrain_args(npz_pack, run, "--resume")):  # a finished run re-exports
        result = cli(*command)
        assert result.exit_code == 0, result.output
        assert f"kept the 2 result(s) recorded in {export} (knn cifar10, segment camvid): same encoder weights" in \
            " ".join(result.output.split())
        record = json.loads((export / "mimzoo.json").read_text())
        assert record["results"] == recorded["results"] and record["repo_id"] == "org/tiny"
        card = ModelCard.load(export / "README.md")
        assert {(r.metric_type, r.metric_value) for r in card.data.eval_results} == {
            ("knn_accuracy", 30.0), ("mean_iou", 0.25)}
        assert 'timm.create_model("hf-hub:org/tiny"' in card.text

    # other weights (a longer run, another run): the results no longer describe them
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["model"]["encoder.cls_token"] += 1
    torch.save(state, run / "checkpoint.pt")
    result = cli("export", run)
    assert result.exit_code == 0, result.output
    assert f"dropped the 2 result(s) recorded in {export} (knn cifar10, segment camvid): they were measured on " \
        "other encoder weights" in " ".join(result.output.split())
    record = json.loads((export / "mimzoo.json").read_text())
    assert record["results"] == [] and record["repo_id"] == "org/tiny"
    assert ModelCard.load(export / "README.md").data.eval_results is None


def test_hub_dataset_ids_only_for_known_data():
    from mimzoo.hub.datasets import hub_dataset_id

    assert [hub_dataset_id(n) for n in ("cifar10-sample", "cifar10-jpeg-q75", "CIFAR10", "imagenet-1k")] == [
        "uoft-cs/cifar10", "uoft-cs/cifar10", "uoft-cs/cifar10", "ILSVRC/imagenet-1k"]
    assert [hub_dataset_id(n) for n in ("cifar100", "cifar100-x", "camvid", "my-photos", "imagenet-21k")] == [
        "uoft-cs/cifar100", "uoft-cs/cifar100", None, None, None]
