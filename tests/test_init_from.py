"""--init-from: continued pretraining starts from an export's whole pretrainer, or from any backbone's encoder."""

import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_pretrain_cli import error_line

from conftest import TINY_ARCH, tiny_pretrain_args, torchrun
from mimzoo.archs import get_arch
from mimzoo.engine.config import PretrainConfig
from mimzoo.engine.distributed import DistContext
from mimzoo.engine.init_from import init_from, load_init_weights
from mimzoo.errors import MimzooError
from mimzoo.hub.backends import write_snapshot
from mimzoo.methods import get_method, resolve_defaults

# an lr this small leaves every weight where it started, so the export shows the start
FROZEN = ("--blr", "1e-30", "--batch-size", "20")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(method: str, **options):
    cfg = resolve_defaults(PretrainConfig(method=method, arch=TINY_ARCH, **options))
    torch.manual_seed(1)
    return get_method(method).build(get_arch(TINY_ARCH), cfg), cfg


def assert_same(state, saved):
    assert state.keys() == saved.keys()
    assert all(torch.equal(state[k], saved[k]) for k in saved)


def test_an_export_of_the_same_method_gives_the_whole_pretrainer(finished_run, cli, npz_pack, tmp_path):
    export = finished_run[0] / "export"
    out = tmp_path / "continued"
    result = cli(*tiny_pretrain_args(npz_pack, out, *FROZEN, "--init-from", export))
    assert result.exit_code == 0, result.output
    assert f"started from {export}: the whole mae pretrainer" in result.output
    assert_same(load_file(out / "export" / "pretrainer.safetensors"), load_file(export / "pretrainer.safetensors"))
    recorded = {"file": "pretrainer.safetensors", "sha256": sha256(export / "pretrainer.safetensors"),
                "part": "pretrainer"}
    config = json.loads((out / "config.json").read_text())
    assert config["init_from"] == str(export) and config["init_weights"] == recorded
    record = json.loads((out / "export" / "mimzoo.json").read_text())
    assert record["config"]["init_weights"] == recorded
    card = (out / "export" / "README.md").read_text()
    assert f"starting from the pretrainer weights of `{export}`" in card and recorded["sha256"] in card


@pytest.mark.parametrize("method,reason", [("pixmim", "its pretrainer is mae, not pixmim"),
                                           ("mff", "its pretrainer is mae, not mff")])
def test_another_method_starts_from_the_encoder_only(finished_run, method, reason):
    export = finished_run[0] / "export"
    model, cfg = build(method)
    fresh_decoder = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    record, message = load_init_weights(str(export), model, cfg)
    assert record == {"file": "model.safetensors", "sha256": sha256(export / "model.safetensors"), "part": "encoder"}
    assert message.endswith(reason)
    assert_same(model.encoder.state_dict(), load_file(export / "model.safetensors"))
    assert_same(model.decoder.state_dict(), fresh_decoder)


def test_same_method_and_shapes_or_not(finished_run, tmp_path):
    export = shutil.copytree(finished_run[0] / "export", tmp_path / "export")
    mff, _ = build("mff")  # an mff export: fusion of the default 6 levels
    save_file(mff.state_dict(), export / "pretrainer.safetensors")
    record = json.loads((export / "mimzoo.json").read_text())
    (export / "mimzoo.json").write_text(json.dumps({**record, "method": "mff"}))
    model, cfg = build("mff", mff_layers=[5, 11])  # a fusion of 2 levels: other shapes
    record, message = load_init_weights(str(export), model, cfg)
    assert record["part"] == "encoder"
    assert "does not fit this run's: fusion.logits is [6, 1, 1, 1], the run needs [2, 1, 1, 1]" in message
    assert_same(model.encoder.state_dict(), load_file(export / "model.safetensors"))
    model, cfg = build("mff")
    record, _ = load_init_weights(str(export), model, cfg)
    assert record["part"] == "pretrainer"
    assert_same(model.state_dict(), mff.state_dict())


def test_a_timm_repo_in_the_hub_cache_and_a_bare_file(finished_run, hf_cache, tmp_path):
    export = finished_run[0] / "export"
    timm_repo = tmp_path / "timm_repo"  # what timm publishes: config.json + model.safetensors, no pretrainer
    timm_repo.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(export / name, timm_repo / name)
    write_snapshot(hf_cache, "timm/vit_tiny_patch4_32.mae", "main", timm_repo)
    bare = shutil.copy(export / "model.safetensors", tmp_path / "encoder.safetensors")
    for spec in ("hf-hub:timm/vit_tiny_patch4_32.mae", str(bare)):
        model, cfg = build("mae")
        record, message = load_init_weights(spec, model, cfg)
        assert record["part"] == "encoder" and "holds an encoder only" in message
        assert_same(model.encoder.state_dict(), load_file(export / "model.safetensors"))


def test_weights_that_do_not_fit_stop_with_one_line(finished_run, cli, npz_pack, tmp_path):
    export = finished_run[0] / "export"
    line = error_line(cli(*tiny_pretrain_args(npz_pack, tmp_path / "r", "--arch", "vit_small_patch4_32",
                                              "--init-from", export)))
    assert f"--init-from {export} does not fit the encoder of --arch vit_small_patch4_32" in line
    assert "blocks.0.attn.proj.bias is [192], the run's encoder needs [384]" in line
    assert line.endswith("these weights look like --arch vit_tiny_patch4_32")
    assert not (tmp_path / "r").exists()
    line = error_line(cli(*tiny_pretrain_args(npz_pack, tmp_path / "r", "--init-from", tmp_path / "nothing")))
    assert "no backbone" in line


def test_processes_that_see_different_weights_stop(finished_run, monkeypatch):
    export = finished_run[0] / "export"
    model, cfg = build("mae", init_from=str(export))
    ours = load_init_weights(str(export), model, cfg)
    other = ({**ours[0], "sha256": "0" * 64}, ours[1])
    monkeypatch.setattr("mimzoo.engine.init_from.all_gather_object", lambda ctx, obj: [obj, other])
    ctx = DistContext(0, 2, 0, torch.device("cpu"))
    with pytest.raises(MimzooError, match="names different weights on different processes .* give every node"):
        init_from(ctx, model, cfg)
    monkeypatch.setattr("mimzoo.engine.init_from.all_gather_object", lambda ctx, obj: [obj, "rank 1 failed"])
    with pytest.raises(MimzooError, match="rank 1 failed"):
        init_from(ctx, model, cfg)


def test_resume_wins_over_init_from(finished_run, cli, tmp_path):
    out = shutil.copytree(finished_run[0], tmp_path / "run")
    before = load_file(out / "export" / "pretrainer.safetensors")
    result = cli("pretrain", "--resume", "--out", out, "--init-from", "hf-hub:org/anything")
    assert result.exit_code == 0, result.output
    assert "--init-from ignored" in result.output and "resumed" in result.output
    assert json.loads((out / "config.json").read_text())["init_from"] is None
    assert_same(load_file(out / "export" / "pretrainer.safetensors"), before)


@pytest.mark.slow
def test_torchrun_processes_start_from_the_same_weights(finished_run, image_folder, tmp_path):
    export = finished_run[0] / "export"
    out = tmp_path / "ddp"
    result = torchrun(*tiny_pretrain_args(image_folder, out, "--batch-size", "12", "--blr", "1e-30", "--init-from",
                                          export), cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("the whole mae pretrainer") == 1 and "weights identical on all 2 processes" in output
    assert_same(load_file(out / "export" / "pretrainer.safetensors"), load_file(export / "pretrainer.safetensors"))
