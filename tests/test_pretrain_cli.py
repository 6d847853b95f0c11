import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_ARCH, run_python, save_bomb, tiny_pretrain_args
from mimzoo.methods import METHODS, MethodSpec
from mimzoo.methods.mae import MAE

PLAIN_TIMM_CHECK = """
import json, sys, timm, torch
export = sys.argv[1]
cfg = json.load(open(export + "/config.json"))
model = timm.create_model(cfg["architecture"], pretrained=True, num_classes=0,
    pretrained_cfg_overlay=dict(file=export + "/model.safetensors", num_classes=0), **cfg.get("model_args", {}))
from safetensors.torch import load_file
model.load_state_dict(load_file(export + "/model.safetensors"), strict=True)
torch.manual_seed(0)
x = torch.randn(2, 3, *model.patch_embed.img_size)  # the arch's input size
torch.save(model.eval().forward_features(x), sys.argv[2])
assert "mimzoo" not in sys.modules
print("plain timm ok")
"""


def test_run_folder_contents(finished_run):
    out, output = finished_run
    assert "effective batch 8 x accum 1 x 1 processes = 8" in output and "lr = blr 0.001 x 8/256" in output
    assert "5 steps/epoch, 1 epoch (0 warm-up)," in output
    # not a terminal: a plain line per log step (--log-every 1), not one bar drawn at the end
    assert [line.split(" loss ")[0] for line in output.splitlines() if line.startswith("pretrain ")] == [
        f"pretrain {step}/5" for step in range(1, 6)]
    config = json.loads((out / "config.json").read_text())
    assert config["arch"] == TINY_ARCH and config["method"] == "mae"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4, 5]
    assert {"step", "epoch", "loss", "lr", "grad_norm", "img_per_s"} <= lines[0].keys()
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 5 and {"model", "optimizer", "scheduler", "rng", "config"} <= state.keys()
    assert sorted(p.name for p in (out / "export").iterdir()) == [
        "README.md", "config.json", "mimzoo.json", "model.safetensors", "pretrainer.safetensors"]


def test_export_holds_encoder_only_and_loads_in_plain_timm(finished_run, tmp_path):
    out, _ = finished_run
    weights = load_file(out / "export" / "model.safetensors")
    assert not any(k.startswith("decoder") or "mask_token" in k for k in weights)
    result = run_python(PLAIN_TIMM_CHECK, str(out / "export"), str(tmp_path / "feats.pt"))
    assert result.returncode == 0, result.stderr
    # mimzoo's encoder gives the same features on the same input
    from mimzoo.archs import get_arch
    from mimzoo.models.encoder import create_encoder

    encoder = create_encoder(get_arch(TINY_ARCH))
    encoder.load_state_dict(weights, strict=True)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(encoder.eval().forward_features(x), torch.load(tmp_path / "feats.pt"), atol=1e-6)


def test_limit_trains_on_a_seeded_subset_and_is_recorded(cli, npz_pack, tmp_path):
    out = tmp_path / "trial"
    result = cli(*tiny_pretrain_args(npz_pack, out, "--limit", "16"))
    assert result.exit_code == 0, result.output
    assert "(16 images)" in result.output and "2 steps/epoch" in result.output
    assert json.loads((out / "config.json").read_text())["limit"] == 16


def test_existing_run_needs_resume(finished_run, cli, npz_pack):
    out, _ = finished_run
    result = cli(*tiny_pretrain_args(npz_pack, out))
    assert result.exit_code == 1 and "already holds a run; continue it with --resume" in result.output


def test_resume_with_another_arch_is_refused(finished_run, cli, npz_pack):
    out, _ = finished_run
    result = cli("pretrain", "--resume", "--out", out, "--arch", "vit_small_patch4_32")
    assert result.exit_code == 1
    assert "was pretrained with arch 'vit_tiny_patch4_32', not 'vit_small_patch4_32'" in result.output


def test_resume_extends_a_finished_run(finished_run, cli, tmp_path):
    import shutil

    out = tmp_path / "extended"
    shutil.copytree(finished_run[0], out)
    result = cli("pretrain", "--resume", "--out", out, "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "resumed" in result.output and torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 10
    config = json.loads((out / "config.json").read_text())
    assert (config["epochs"], config["blr"], config["min_lr"], config["no_weight_decay"]) == (2, 1e-3, 0.0, [])


def test_resume_with_another_effective_batch_is_refused(finished_run, cli, tmp_path):
    import shutil

    out = shutil.copytree(finished_run[0], tmp_path / "run")
    before = (out / "checkpoint.pt").read_bytes()
    line = error_line(cli("pretrain", "--resume", "--out", out, "--epochs", "2", "--batch-size", "4"))
    # step 5 would mean 20 images into the epoch, not 40: another place in the data and the schedule
    assert ("was trained with effective batch 8 (--batch-size 8 x --accum 1 x 1 processes), not 4; resume with the "
            "same product (e.g. --batch-size 8)") in line
    assert (out / "checkpoint.pt").read_bytes() == before
    result = cli("pretrain", "--resume", "--out", out, "--epochs", "2", "--batch-size", "4", "--accum", "2")
    assert result.exit_code == 0, result.output  # the same 8 images a step
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 10


def error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # in-process: a traceback is kept here
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize("args,message", [
    (["--data", "/nonexistent/images"], "does not exist"),
    (["--arch", "vit_tiny_patch5_32"], "not a positive multiple of patch size"),
    (["--arch", "vit_tiny_patch4_0"], "image size 0 is not a positive multiple of patch size 4"),
    (["--arch", "convnext_tiny"], "unknown arch"),
    (["--batch-size", "64"], "larger than the dataset (40 images)"),
    (["--mask-ratio", "1.0"], "--mask-ratio must be in [0, 1)"),
    (["--mask-ratio", "0"], "--mask-ratio 0 leaves mae nothing to reconstruct"),
])
def test_bad_input_one_clear_line(cli, npz_pack, tmp_path, args, message):
    # a repeated option overrides the earlier one, as on a real command line
    assert message in error_line(cli(*tiny_pretrain_args(npz_pack, tmp_path / "r", *args)))


def test_empty_folder_and_resume_without_checkpoint(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    assert "no images found" in error_line(cli(*tiny_pretrain_args(tmp_path / "empty", tmp_path / "r")))
    assert "no checkpoint to resume" in error_line(cli("pretrain", "--resume", "--out", tmp_path / "nothing"))


@pytest.mark.parametrize("bad_step", [4, 3])  # read at its checkpoint step, or one step later (no host sync at 3)
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(cli, npz_pack, tmp_path, monkeypatch, bad_step):
    class ExplodingMAE(MAE):
        calls = 0

        def forward(self, images):
            out = super().forward(images)
            ExplodingMAE.calls += 1
            if ExplodingMAE.calls >= bad_step:
                out.loss = out.loss * float("nan")
            return out

    monkeypatch.setitem(METHODS, "mae", MethodSpec(lambda arch, cfg: ExplodingMAE(arch), "rrc", ""))
    out = tmp_path / "r"
    line = error_line(cli(*tiny_pretrain_args(npz_pack, out, "--ckpt-every", "2")))
    assert f"non-finite loss (nan) or gradient norm at step {bad_step}" in line and "last good checkpoint" in line
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2
    assert not (out / "export").exists()


def _pretrain_config(monkeypatch, cli, *args):
    """The config and options `mimzoo pretrain ARGS` hands the library (which does not run)."""
    seen = {}
    monkeypatch.setattr("mimzoo.engine.pretrain.pretrain", lambda cfg, **kw: seen.update(cfg=cfg, **kw))
    result = cli("pretrain", *args)
    assert result.exit_code == 0, result.output
    return seen


def test_the_demo_is_asked_for_by_name_and_defaults_do_not_depend_on_data(monkeypatch, cli):
    assert "or try the demo: mimzoo pretrain --demo" in error_line(cli("pretrain"))
    demo = _pretrain_config(monkeypatch, cli, "--demo")["cfg"]
    assert (demo.method, demo.arch, demo.data, demo.out, demo.epochs) == ("mae", TINY_ARCH, "builtin", "runs/demo", 10)
    pixmim = _pretrain_config(monkeypatch, cli, "--method", "pixmim", "--data", "builtin")["cfg"]
    assert (pixmim.method, pixmim.arch, pixmim.out, pixmim.epochs) == ("pixmim", "vit_base_patch16_224", None, 400)
    seen = _pretrain_config(monkeypatch, cli, "--demo", "--resume", "--epochs", "12")
    assert seen["cfg"].out == "runs/demo" and seen["explicit"] == {"epochs"}  # the demo's run, its own config


def test_resume_without_out_names_the_runs_beside_the_default(finished_run, cli, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(finished_run[0], tmp_path / "runs" / "demo")
    monkeypatch.chdir(tmp_path)
    line = error_line(cli("pretrain", "--resume"))
    assert "no checkpoint to resume in runs/mae" in line and "runs/demo (resume one with --out RUN)" in line


def test_choices_are_checked_and_listed(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich's help width: each choice list on one line
    result = cli("pretrain", "--method", "simclr")
    assert result.exit_code == 2 and "'simclr' is not one of" in result.output
    for command, option, choices in [("pretrain", "--method", "mae|pixmim|mff|misalign|localmim"),
                                     ("pretrain", "--degradation", "zoom-in|zoom-out"), ("knn", "--pool", "token|avg")]:
        text = cli(command, "--help").output
        assert option in text and choices in text


def test_corrupt_images_are_skipped_counted_and_named(cli, image_folder, tmp_path):
    data = tmp_path / "images"
    data.mkdir()
    for i, path in enumerate(sorted(image_folder.rglob("*.png"))[:14]):
        (data / f"{i:02d}.png").write_bytes(path.read_bytes())
    (data / "99.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    save_bomb(data / "98.png", 30000)  # 70 bytes claiming 30000 x 30000 pixels: PIL raises, it is skipped
    out = tmp_path / "run"
    result = cli(*tiny_pretrain_args(data, out, "--batch-size", "4", "--log-every", "1"))
    assert result.exit_code == 0, result.output
    assert "unreadable image" in result.output and "99.jpg (not in an image format PIL can decode)" in result.output
    assert "98.png (Image size (900000000 pixels) exceeds limit" in result.output
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["skipped_images"] == 2
    for path in data.iterdir():
        path.write_bytes(b"")
    assert "none of the 16 images is readable" in error_line(cli(*tiny_pretrain_args(data, tmp_path / "run2")))


def test_version(cli):
    from mimzoo import __version__

    result = cli("--version")
    assert result.exit_code == 0 and result.output.strip() == f"mimzoo {__version__}"


def test_a_run_killed_before_its_first_checkpoint_starts_its_metrics_log_again(finished_run, cli, npz_pack, tmp_path):
    import shutil

    out = tmp_path / "killed"
    out.mkdir()
    shutil.copy(finished_run[0] / "config.json", out)  # what a run killed at step 2 leaves: config and 2 log lines
    (out / "metrics.jsonl").write_text("".join((finished_run[0] / "metrics.jsonl").read_text().splitlines(True)[:2]))
    result = cli(*tiny_pretrain_args(npz_pack, out, "--log-every", "1", "--batch-size", "20"))  # 2 steps
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_new_run_never_takes_over_files_mimzoo_did_not_write(cli, npz_pack, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"lr": 0.1}')
    line = error_line(cli(*tiny_pretrain_args(npz_pack, mine)))
    assert line == f"error: {mine / 'config.json'} was not written by mimzoo pretrain; choose a new --out (a run " \
        "writes its own)"
    (mine / "config.json").unlink()
    (mine / "metrics.jsonl").write_text('{"step": 1}\n')
    line = error_line(cli(*tiny_pretrain_args(npz_pack, mine)))
    assert f"{mine / 'metrics.jsonl'} was not written by a mimzoo run (it has no config.json beside it)" in line
    (mine / "metrics.jsonl").unlink()
    (mine / "export").mkdir()
    (mine / "export" / "plan.txt").write_text("my plan")  # pretraining ends by exporting here: refused at the start
    line = error_line(cli(*tiny_pretrain_args(npz_pack, mine)))
    assert f"{mine / 'export'} holds files that are not part of a mimzoo export (plan.txt)" in line
    assert sorted(str(p.relative_to(mine)) for p in mine.rglob("*")) == ["export", "export/plan.txt"]
