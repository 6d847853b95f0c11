"""`mimzoo import`: official MAE checkpoints and transformers ViTMAEForPreTraining folders become mimzoo exports."""

from __future__ import annotations

import argparse
import collections
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import TINY_ARCH
from mimzoo.errors import MimzooError
from mimzoo.hub import load_backbone, load_pretrainer
from mimzoo.hub.importers import import_mae
from mimzoo.models.pos_embed import sincos_pos_embed_2d

transformers = pytest.importorskip("transformers")  # the test extra installs it; mimzoo itself never imports it

DIM, DEPTH, DEC_DIM, DEC_DEPTH, GRID, PATCH = 192, 12, 128, 4, 8, 4  # vit_tiny_patch4_32 with its 128 x 4 decoder


def _block(prefix: str, dim: int) -> dict[str, tuple[int, ...]]:
    """A timm 0.3 / 1.0 ``Block`` as models_mae.py builds it (qkv_bias=True, mlp_ratio 4)."""
    return {f"{prefix}.norm1.weight": (dim,), f"{prefix}.norm1.bias": (dim,),
            f"{prefix}.attn.qkv.weight": (3 * dim, dim), f"{prefix}.attn.qkv.bias": (3 * dim,),
            f"{prefix}.attn.proj.weight": (dim, dim), f"{prefix}.attn.proj.bias": (dim,),
            f"{prefix}.norm2.weight": (dim,), f"{prefix}.norm2.bias": (dim,),
            f"{prefix}.mlp.fc1.weight": (4 * dim, dim), f"{prefix}.mlp.fc1.bias": (4 * dim,),
            f"{prefix}.mlp.fc2.weight": (dim, 4 * dim), f"{prefix}.mlp.fc2.bias": (dim,)}


def official_layout(decoder_dim: int = DEC_DIM) -> dict[str, tuple[int, ...]]:
    """The state dict of facebookresearch/mae models_mae.MaskedAutoencoderViT (efb2a80, lines 33-57), by name and
    shape, for ViT-T/4 at 32 px."""
    shapes = {"cls_token": (1, 1, DIM), "pos_embed": (1, GRID**2 + 1, DIM),
              "patch_embed.proj.weight": (DIM, 3, PATCH, PATCH), "patch_embed.proj.bias": (DIM,)}
    for i in range(DEPTH):
        shapes |= _block(f"blocks.{i}", DIM)
    shapes |= {"norm.weight": (DIM,), "norm.bias": (DIM,), "decoder_embed.weight": (decoder_dim, DIM),
               "decoder_embed.bias": (decoder_dim,), "mask_token": (1, 1, decoder_dim),
               "decoder_pos_embed": (1, GRID**2 + 1, decoder_dim)}
    for i in range(DEC_DEPTH):
        shapes |= _block(f"decoder_blocks.{i}", decoder_dim)
    return shapes | {"decoder_norm.weight": (decoder_dim,), "decoder_norm.bias": (decoder_dim,),
                     "decoder_pred.weight": (PATCH**2 * 3, decoder_dim), "decoder_pred.bias": (PATCH**2 * 3,)}


def official_state(decoder_dim: int = DEC_DIM) -> collections.OrderedDict:
    torch.manual_seed(0)
    state = collections.OrderedDict((k, torch.randn(s)) for k, s in official_layout(decoder_dim).items())
    state["pos_embed"] = sincos_pos_embed_2d(DIM, GRID)  # both fixed sin-cos, as initialize_weights makes them
    state["decoder_pos_embed"] = sincos_pos_embed_2d(decoder_dim, GRID)
    return state


def test_official_checkpoint_maps_every_tensor_and_reads_the_runs_args(tmp_path):
    state = official_state()
    args = argparse.Namespace(model="mae_vit_tiny", input_size=32, mask_ratio=0.6, norm_pix_loss=False, epochs=100,
                              blr=1.5e-4, output_dir="out")  # main_pretrain.py saves its args beside the model
    torch.save({"model": state, "epoch": 99, "args": args}, tmp_path / "checkpoint-99.pth")
    imported = import_mae(tmp_path / "checkpoint-99.pth")
    ours = imported.model.state_dict()
    assert imported.model.arch.name == TINY_ARCH and not imported.encoder_only
    assert (imported.model.mask_ratio, imported.model.norm_pix_loss) == (0.6, False)
    assert imported.source["epochs"] == 100 and imported.source["format"] == "mae"
    renames = {"mask_token": "decoder.mask_token", "decoder_embed": "decoder.embed", "decoder_blocks": "decoder.blocks",
               "decoder_norm": "decoder.norm", "decoder_pred": "decoder.pred"}
    for key, tensor in state.items():
        if key == "decoder_pos_embed":  # mimzoo recomputes it; the import checked it is the same sin-cos
            assert torch.allclose(imported.model.decoder.pos_embed, tensor, atol=1e-6)
            continue
        head = key.split(".")[0]
        name = key.replace(head, renames[head], 1) if head in renames else f"encoder.{key}"
        assert torch.equal(ours[name], tensor), key


def test_official_encoder_only_release_and_decoder_that_does_not_fit(tmp_path):
    state = official_state()
    encoder = {k: v for k, v in state.items() if not k.startswith(("decoder", "mask_token"))}
    torch.save({"model": encoder}, tmp_path / "mae_pretrain_vit_tiny.pth")  # the released encoder-only layout
    imported = import_mae(tmp_path / "mae_pretrain_vit_tiny.pth")
    assert imported.encoder_only and "no decoder" in imported.notes[0]
    assert torch.equal(imported.model.encoder.blocks[3].attn.qkv.weight, state["blocks.3.attn.qkv.weight"])

    torch.save(official_state(decoder_dim=256), tmp_path / "wide_decoder.pth")  # a bare state dict, 256-wide decoder
    wide = r"decoder.blocks.0.attn.proj.bias is \[256\], mimzoo needs \[128\].*--encoder-only"
    with pytest.raises(MimzooError, match=wide):
        import_mae(tmp_path / "wide_decoder.pth")
    assert import_mae(tmp_path / "wide_decoder.pth", encoder_only=True).encoder_only


class NotATensor:  # a class a checkpoint could name: unpickling it would run the file's choice of code
    pass


@pytest.mark.parametrize("content,message", [
    ({"model": {"w": NotATensor()}}, "never runs code"),
    ({"model": {"w": 1}}, "not an MAE checkpoint"),
    ({"model": {}, "config": {}, "step": 5, "rng": []}, r"is a mimzoo run's checkpoint, .*: export its run with "
                                                        r"mimzoo export "),
    (None, r"cannot read .* \(a truncated zip archive: the end of the file is missing\)"),
])
def test_files_that_are_not_mae_checkpoints(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    if content is None:
        path.write_bytes(b"PK\x03\x04 truncated")
    else:
        torch.save(content, path)
    with pytest.raises(MimzooError, match=message):
        import_mae(path)


@pytest.fixture(scope="module")
def vitmae(tmp_path_factory):
    """A transformers ViTMAEForPreTraining of ViT-T/4 at 32 px, saved with save_pretrained, with the fixed sin-cos
    positions that pretrained Hub checkpoints hold."""
    config = transformers.ViTMAEConfig(
        hidden_size=DIM, num_hidden_layers=DEPTH, num_attention_heads=3, intermediate_size=4 * DIM, image_size=32,
        patch_size=PATCH, decoder_hidden_size=DEC_DIM, decoder_num_hidden_layers=DEC_DEPTH,
        decoder_num_attention_heads=4, decoder_intermediate_size=4 * DEC_DIM, norm_pix_loss=True,
        layer_norm_eps=1e-6, mask_ratio=0.75)
    torch.manual_seed(0)
    model = transformers.ViTMAEForPreTraining(config).eval()
    with torch.no_grad():
        model.vit.embeddings.position_embeddings.copy_(sincos_pos_embed_2d(DIM, GRID))
        model.decoder.decoder_pos_embed.copy_(sincos_pos_embed_2d(DEC_DIM, GRID))
    folder = tmp_path_factory.mktemp("vitmae") / "vit-mae-tiny"
    model.save_pretrained(folder)
    return model, folder


def test_transformers_model_has_the_sources_loss_on_a_fixed_image_and_mask(vitmae):
    source, folder = vitmae
    imported = import_mae(folder)
    images = torch.randn(2, 3, 32, 32)
    torch.manual_seed(5)
    noise = torch.rand(2, GRID**2)  # both mask by argsort of this noise, drawn first in mimzoo's forward
    with torch.no_grad():
        theirs = source(pixel_values=images, noise=noise).loss
        torch.manual_seed(5)
        ours = imported.model(images).loss
    assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    assert imported.source["format"] == "transformers" and imported.model.norm_pix_loss


def _renamed(state, old: str, new: str):
    return {k.replace(old, new): v for k, v in state.items()}


def test_every_transformers_layout_imports_the_same_weights(vitmae, tmp_path):
    source, folder = vitmae
    reference = import_mae(folder).model.state_dict()
    saved = load_file(folder / "model.safetensors")
    layouts = {  # the Hub's (facebook/vit-mae-base, transformers 4) and transformers 5's own module names
        "hub": _renamed(saved, "decoder.decoder_encoder.layer.", "decoder.decoder_layers."),
        "v5": {k: v.contiguous() for k, v in source.state_dict().items()},
    }
    assert any(".attention.attention.query." in k for k in layouts["hub"])
    assert any(".attention.q_proj." in k for k in layouts["v5"])
    for name, state in layouts.items():
        target = tmp_path / name
        target.mkdir()
        (target / "config.json").write_text((folder / "config.json").read_text())
        save_file(state, target / "model.safetensors")
        ours = import_mae(target).model.state_dict()
        assert all(torch.equal(ours[k], reference[k]) for k in reference), name


def test_transformers_config_that_does_not_fit(vitmae, tmp_path):
    _, folder = vitmae
    target = tmp_path / "wrong-heads"
    target.mkdir()
    config = json.loads((folder / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, "num_attention_heads": 6}))
    (target / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(MimzooError, match="6 heads, mimzoo's vit_tiny_patch4_32 has 3"):
        import_mae(target)


def test_cli_import_writes_an_export_that_plain_timm_and_mimzoo_load(vitmae, cli, tmp_path):
    source, folder = vitmae
    out = tmp_path / "imported"
    result = cli("import", folder, "--out", out, "--dataset", "tiny-test")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "mimzoo.json").read_text())
    assert record["imported_from"]["format"] == "transformers" and record["pretraining"] is None
    card = (out / "README.md").read_text()
    assert "imported into mimzoo from a transformers ViTMAEForPreTraining checkpoint" in card
    backbone, _ = load_backbone(str(out))
    images = torch.randn(1, 3, 32, 32)
    source.config.mask_ratio = 0.0  # transformers' encoder on every token, in image order
    try:
        with torch.no_grad():
            theirs = source.vit(pixel_values=images, noise=torch.arange(GRID**2.0)[None]).last_hidden_state
    finally:
        source.config.mask_ratio = 0.75
    assert torch.allclose(backbone.forward_features(images), theirs, atol=1e-5)
    assert torch.equal(load_pretrainer(out).state_dict()["decoder.mask_token"], source.decoder.mask_token)
    bad = cli("import", tmp_path / "missing.pth", "--out", tmp_path / "x")
    assert bad.exit_code == 1 and "does not exist" in bad.output and "Traceback" not in bad.output
