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


def readme_block(after: str) -> str:
    """The first ```python block of README.md after the line ``after``."""
    from conftest import REPO

    text = (REPO / "README.md").read_text()
    start = text.index("```python\n", text.index(after)) + len("```python\n")
    return text[start : text.index("```", start)]


def test_readme_plain_timm_snippets_keep_the_exports_preprocessing(export):
    import timm

    code = readme_block("Load an export with plain timm, without mimzoo:").replace("runs/demo/export", str(export))
    expected = json.loads((export / "config.json").read_text())["pretrained_cfg"]
    models = {}
    exec(code.replace("model = ", "models[len(models)] = model = "), {"models": models})
    assert len(models) == 2  # local-dir: and the two files with pretrained_cfg_overlay
    for model in models.values():
        config = timm.data.resolve_model_data_config(model)
        assert list(config["input_size"]) == expected["input_size"] == [3, 32, 32]
        assert (list(config["mean"]), list(config["std"]), config["crop_pct"]) == (
            expected["mean"], expected["std"], expected["crop_pct"])
        assert same_weights(model, export)


def test_a_timm_classifier_checkpoint_loads_without_its_head(tmp_path):
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    classifier = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=4, depth=2)
    save_for_hf(classifier, tmp_path / "clf", safe_serialization=True)  # as any *_in1k repo: head.* in the weights
    model, info = load_backbone(f"local-dir:{tmp_path / 'clf'}")
    assert model.num_classes == 0 and info.dropped == ("head.bias", "head.weight")
    assert "10-class timm classifier; its classifier (head.bias, head.weight) is left out" in info.notes[0]
    expected = {k: v for k, v in classifier.state_dict().items() if not k.startswith("head.")}
    assert model.state_dict().keys() == expected.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())

    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    (tmp_path / "clf" / "config.json").write_text(json.dumps({**config, "num_classes": 0}))
    with pytest.raises(MimzooError, match="head.bias is not part of the model"):  # a backbone's extra keys still stop
        load_backbone(f"local-dir:{tmp_path / 'clf'}")
