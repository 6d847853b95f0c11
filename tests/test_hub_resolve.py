"""The backbone resolver: every spec form gives the same strictly loaded timm ViT, or one clear line."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import TINY_ARCH
from mimzoo.errors import MimzooError
from mimzoo.hub import load_backbone
from mimzoo.hub.backends import write_snapshot
from mimzoo.zoo import ZOO, ZooEntry


@pytest.fixture()
def export(finished_run):
    return finished_run[0] / "export"


def same_weights(model, export) -> bool:
    saved = load_file(export / "model.safetensors")
    state = model.state_dict()
    return state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)


def test_folder_specs_and_bare_weights(export, tmp_path):
    for spec in (str(export), f"local-dir:{export}", str(export / "model.safetensors")):
        model, info = load_backbone(spec)
        assert same_weights(model, export) and info.export_dir == export.resolve() and info.repo_id is None
        assert model.pretrained_cfg["tag"] == "mimzoo_mae_pack_ep1"  # preprocessing travels with the weights
    bare = shutil.copy(export / "model.safetensors", tmp_path / "encoder.safetensors")
    model, info = load_backbone(str(bare), arch=TINY_ARCH)
    assert same_weights(model, export) and info.export_dir is None
    with pytest.raises(MimzooError, match="has no config.json beside it; say what it is with --arch"):
        load_backbone(str(bare))


def test_hub_cache_and_zoo_specs_load_offline(export, hf_cache, monkeypatch):
    write_snapshot(hf_cache, "org/tiny", "main", export)
    write_snapshot(hf_cache, "org/tiny", "v1", export)
    monkeypatch.setitem(ZOO, "tiny", ZooEntry("tiny", "mae", TINY_ARCH, "pack", 1, "org/tiny", "test entry"))
    for spec in ("hf-hub:org/tiny", "hf-hub:org/tiny@v1", "tiny"):
        model, info = load_backbone(spec)
        assert same_weights(model, export) and info.repo_id == "org/tiny" and info.export_dir is None
    with pytest.raises(MimzooError, match=r"org/other is not in the local Hugging Face cache .*mimzoo pull org/other"):
        load_backbone("hf-hub:org/other")


def test_model_kwargs_adapt_the_loaded_weights(export):
    model, _ = load_backbone(str(export), img_size=64, drop_path_rate=0.1)
    assert model.pos_embed.shape == (1, 1 + 16 * 16, 192)  # timm resampled the 8x8 grid to 16x16
    assert model.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 257, 192)


def test_clear_errors(export, tmp_path):
    def error(spec: str) -> str:
        with pytest.raises(MimzooError) as caught:
            load_backbone(spec)
        assert "\n" not in str(caught.value)
        return str(caught.value)

    (tmp_path / "empty").mkdir()
    assert "is not an export: it has no config.json or model.safetensors" in error(str(tmp_path / "empty"))
    assert "no backbone 'nowhere': not a file or folder, nor a zoo name" in error("nowhere")
    assert "is not a Hub repo id" in error("hf-hub:a/b/c")
    (tmp_path / "notes.txt").write_text("x")
    assert "is not a .safetensors file" in error(str(tmp_path / "notes.txt"))

    wrong = shutil.copytree(export, tmp_path / "wrong")
    config = json.loads((wrong / "config.json").read_text())
    config["model_args"]["patch_size"] = 8  # the weights were trained with patch 4
    (wrong / "config.json").write_text(json.dumps(config))
    message = error(str(wrong))
    assert "model.safetensors does not fit its config" in message
    assert "patch_embed.proj.weight is [192, 3, 4, 4], the config needs [192, 3, 8, 8]" in message

    weights = load_file(export / "model.safetensors")
    del weights["norm.weight"]
    save_file(weights, wrong / "model.safetensors")
    (wrong / "config.json").write_text((export / "config.json").read_text())
    assert "does not fit its config (vit_tiny_patch16_224 with" in error(str(wrong))
    assert "norm.weight is missing" in error(str(wrong))
