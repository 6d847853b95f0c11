import json

import pytest
import torch
from test_pretrain_cli import error_line

from conftest import TINY_ARCH, assert_plain_timm_loads, official_side_by_side_loss, tiny_pretrain_args
from mimzoo.archs import get_arch
from mimzoo.errors import MimzooError
from mimzoo.hub.export import load_run
from mimzoo.masking import random_token_mask
from mimzoo.methods.localmim import LocalMIM, parse_scales, resolve_scales, scale_mask
from mimzoo.targets import hog_features


@pytest.mark.parametrize("arch,target,scales,taps,grids,dims", [
    ("vit_tiny_patch16_224", "hog", [4, 2, 1, 0.5], [1, 3, 9, 11], [56, 28, 14, 7], [27] * 4),
    (TINY_ARCH, "pixel", [4, 2, 1, 0.5], [1, 3, 9, 11], [32, 16, 8, 4], [1 * 3, 4 * 3, 16 * 3, 64 * 3]),
    # the default at 32/4 with HOG drops x4 (1-px cells); the 3 scales read the last 3 taps
    (TINY_ARCH, "hog", [2, 1, 0.5], [3, 9, 11], [16, 8, 4], [27] * 3),
])
def test_prediction_and_target_shapes_per_scale(arch, target, scales, taps, grids, dims):
    a = get_arch(arch)
    model = LocalMIM(a, target=target)
    assert (model.scales, model.taps) == (scales, taps)
    images = torch.randn(2, 3, a.img_size, a.img_size)
    preds = model.predict(images, random_token_mask(2, a.num_patches, 0.75, images.device))
    expected = [(2, g * g, d) for g, d in zip(grids, dims, strict=True)]
    assert [tuple(p.shape) for p in preds] == expected
    assert [tuple(t.shape) for t in model.targets(images)] == expected
    out = model(images)
    assert torch.isclose(out.loss, out.logs["scale_losses"].sum()) and out.pred.shape == preds[scales.index(1)].shape


# The reference's HOG (Haoqing-Wang/LocalMIM 314a6e5, ViT/models_mim.py, HOGLayer) filters each channel with the
# kernel [[1, 0, -1], [2, 0, -2], [1, 0, -1]] (left minus right) and its transpose (top minus bottom), takes
# phase = atan2(first, second) and votes in bin floor(phase / pi * nbins) mod nbins. Worked by hand on 0/1 edges:
#   vertical edge, dark | bright:      first -4, second 0  -> -pi/2 -> floor(-4.5) mod 9 = 4, floor(-9) mod 18 = 9
#   vertical edge, bright | dark:      first +4, second 0  -> +pi/2 -> 4 of 9, 9 of 18
#   horizontal edge, dark over bright: first 0, second -4  -> pi    -> 9 mod 9 = 0, 18 mod 18 = 0
#   diagonal edge, bright where x > y: first -3, second +3 -> -pi/4 -> floor(-2.25) mod 9 = 6, floor(-4.5) mod 18 = 13
EDGES = {
    "vertical": lambda y, x: x >= 8,
    "vertical, bright left": lambda y, x: x < 8,
    "horizontal": lambda y, x: y >= 8,
    "diagonal": lambda y, x: x > y,
}
REFERENCE_BINS = {  # edge -> {nbins: the bin the reference's code puts it in}
    "vertical": {9: 4, 18: 9},
    "vertical, bright left": {9: 4, 18: 9},
    "horizontal": {9: 0, 18: 0},
    "diagonal": {9: 6, 18: 13},
}


# What the official code computes (Haoqing-Wang/LocalMIM 314a6e5, ViT/models_mim.py MaskedAutoencoderViT at ViT-T/16,
# 224 px, HOG target, 9 bins, no bias; run side by side in fp64 with the setup of official_side_by_side_loss on 2
# images; docs/parity.md): its loss and eleven gradient norms (all 239 gradients agreed to 7e-16)
OFFICIAL_LOCALMIM_LOSS = 0.42177522189852507
OFFICIAL_LOCALMIM_GRAD_NORMS = {"encoder.patch_embed.proj.weight": 0.00010243680978591934,
                                "encoder.cls_token": 3.6421725360597873e-06,
                                "encoder.blocks.1.attn.qkv.weight": 1.6743409986545997e-05,
                                "encoder.blocks.11.mlp.fc2.weight": 2.8450792029254184e-05,
                                "tap_norms.0.weight": 6.847098845115776e-07,
                                "encoder.norm.weight": 0.00037731063195255897,
                                "decoders.0.mask_token": 0.0001667296715256957,
                                "decoders.3.mask_token": 0.006658530206964233,
                                "heads.0.0.weight": 0.002216214313687585,
                                "heads.0.1.weight": 0.003915747367365536,
                                "heads.3.1.weight": 0.12029858609115016}


def test_loss_and_gradients_are_the_official_codes():
    model = LocalMIM(get_arch("vit_tiny_patch16_224"), target="hog")
    assert model.scales == [4, 2, 1, 0.5] and model.hog_bias is None
    assert official_side_by_side_loss(model, batch=2, size=224).item() == pytest.approx(OFFICIAL_LOCALMIM_LOSS,
                                                                                        rel=1e-12)
    params = dict(model.named_parameters())
    for name, norm in OFFICIAL_LOCALMIM_GRAD_NORMS.items():
        assert params[name].grad.norm().item() == pytest.approx(norm, rel=1e-9), name


@pytest.mark.parametrize("nbins", [9, 18])
@pytest.mark.parametrize("edge", list(EDGES))
def test_edges_vote_in_the_reference_bins(edge, nbins):
    y, x = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    image = EDGES[edge](y, x).float().expand(1, 3, 16, 16)
    cells = hog_features(image, [4], nbins)[0].view(4, 4, 3, nbins)  # (cell row, cell col, channel, bin)
    on_edge = cells.abs().sum(-1) > 0  # cells the edge crosses; the others are flat
    assert on_edge.any() and not on_edge.all()
    assert (cells[on_edge].argmax(-1) == REFERENCE_BINS[edge][nbins]).all()


def test_hog_of_a_flat_image_is_zero_and_a_bias_votes_in_its_own_bin_per_scale():
    flat = torch.full((1, 3, 16, 16), 0.7)
    assert all(torch.equal(f, torch.zeros_like(f)) for f in hog_features(flat, [2, 4]))
    # the reference adds its conv's bias to both responses: a flat image votes at atan2(bias) in every pixel,
    # (1, 0) -> pi/2 -> bin 4 of 9 and (0, 1) -> 0 -> bin 0, so every cell is that one bin, L2-normalised
    biased = hog_features(flat, [2, 4], bias=torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    for features, hot in zip(biased, [4, 0], strict=True):
        assert torch.allclose(features.view(-1, 3, 9), torch.nn.functional.one_hot(torch.tensor(hot), 9).float())


def test_hog_bins_and_bias_options_shape_the_model():
    arch = get_arch(TINY_ARCH)
    model = LocalMIM(arch, hog_bins=18, hog_bias=True)
    bias = model.state_dict()["hog_bias"]  # saved with checkpoints and exports
    assert bias.shape == (3, 2) and bias.abs().max() < 1 / 3 and len(bias.unique()) == 6
    assert [t.shape[-1] for t in model.targets(torch.zeros(1, 3, 32, 32))] == [54] * 3
    assert all(t.abs().sum() > 0 for t in model.targets(torch.zeros(1, 3, 32, 32)))  # the bias votes on flat images
    assert "hog_bias" not in LocalMIM(arch).state_dict()


def test_fine_scales_repeat_the_patch_bit_and_the_coarse_scale_weighs_by_the_masked_fraction():
    mask = torch.tensor([[1, 0, 1, 1],
                         [0, 0, 1, 1],
                         [0, 0, 0, 1],
                         [0, 0, 0, 0]], dtype=torch.float).view(1, 16)
    assert scale_mask(mask, 4, 0.5).tolist() == [[0.25, 1.0, 0.0, 0.25]]
    assert torch.equal(scale_mask(mask, 4, 1), mask)
    fine = scale_mask(mask, 4, 2).view(8, 8)
    assert torch.equal(fine, mask.view(4, 4).repeat_interleave(2, 0).repeat_interleave(2, 1))


@pytest.mark.parametrize("arch,target,scales,message", [
    (TINY_ARCH, "hog", [4, 2, 1, 0.5], "--localmim-scales 4 does not fit vit_tiny_patch4_32 with --target hog: "
                                       "HOG cells would be 1 px (patch 4 / 4), not a whole 2 px or more; "
                                       "use --localmim-scales 2,1,0.5"),
    ("vit_tiny_patch4_28", "pixel", [1, 0.5], "pools 2x2 patches but the patch grid is 7x7; "
                                              "use --localmim-scales 4,2,1"),
    (TINY_ARCH, "pixel", [8], "pixel regions would be 0.5 px"),
    (TINY_ARCH, "pixel", [3], "scales are powers of two"),
    (TINY_ARCH, "pixel", [2, 2], "1 to 4 different scales"),
    ("vit_tiny_patch1_31", "hog", None, "no LocalMIM scale fits vit_tiny_patch1_31 with --target hog; use --target "),
])
def test_scales_that_cannot_exist_name_the_fix(arch, target, scales, message):
    with pytest.raises(MimzooError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_scales(get_arch(arch), target, scales)


def test_default_scales_adapt_to_the_arch():
    assert resolve_scales(get_arch("vit_tiny_patch4_28"), "hog") == [2, 1]  # 1-px cells and an odd grid
    assert resolve_scales(get_arch(TINY_ARCH), "pixel", [0.5, 2]) == [2, 0.5]  # sorted fine to coarse
    assert parse_scales("4,2,1,0.5") == [4, 2, 1, 0.5]
    with pytest.raises(MimzooError, match="comma-separated scales like 4,2,1,0.5, not '4;2'"):
        parse_scales("4;2")


@pytest.mark.parametrize("extra,message", [
    (["--method", "mae", "--target", "hog"], "--method mae does not take --target hog; choose one of: pixel, lowpass"),
    (["--method", "localmim", "--localmim-scales", "4,2"], "use --localmim-scales 2,1,0.5"),
    (["--localmim-scales", "2"], "--localmim-scales applies to --method localmim only"),
    (["--method", "localmim", "--hog-bins", "1"], "--hog-bins must be 2 or more (the paper's: 9, or 18 for ViT-L)"),
    (["--hog-bias"], "--hog-bins and --hog-bias apply to --method localmim with --target hog only"),
    (["--method", "localmim", "--target", "pixel", "--hog-bins", "18"], "apply to --method localmim with --target hog"),
])
def test_bad_localmim_options_one_clear_line(cli, npz_pack, tmp_path, extra, message):
    assert message in error_line(cli(*tiny_pretrain_args(npz_pack, tmp_path / "r", *extra)))


@pytest.mark.parametrize("target,arch,scales", [("hog", "vit_tiny_patch8_64", [4, 2, 1, 0.5]),
                                                ("pixel", TINY_ARCH, [4, 2, 1, 0.5])])
def test_localmim_pretrains_two_steps_and_exports_a_plain_timm_backbone(cli, npz_pack, tmp_path, target, arch,
                                                                         scales):
    out = tmp_path / "localmim"
    extra = ["--method", "localmim", "--arch", arch, "--batch-size", "16", "--log-every", "1"]
    result = cli(*tiny_pretrain_args(npz_pack, out, *extra, *(["--target", target] if target != "hog" else [])))
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["method"], config["target"], config["localmim_scales"]) == ("localmim", target, scales)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2] and len(lines[-1]["scale_losses"]) == len(scales)
    assert_plain_timm_loads(out / "export")


def test_resume_with_another_target_is_refused(cli, npz_pack, tmp_path):
    out = tmp_path / "run"
    assert cli(*tiny_pretrain_args(npz_pack, out, "--method", "localmim", "--target", "pixel",
                                   "--batch-size", "20")).exit_code == 0
    line = error_line(cli("pretrain", "--resume", "--out", out, "--target", "lowpass", "--epochs", "2"))
    assert "was pretrained with target 'pixel', not 'lowpass'" in line


def test_hog_options_are_recorded_and_travel_with_the_checkpoint(cli, npz_pack, tmp_path):
    out = tmp_path / "run"
    result = cli(*tiny_pretrain_args(npz_pack, out, "--method", "localmim", "--hog-bins", "18", "--hog-bias",
                                     "--batch-size", "20"))
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["hog_bins"], config["hog_bias"]) == (18, True)
    assert (config["blr"], config["min_lr"], config["no_weight_decay"]) == (1e-3, 1e-6, [])  # --blr given, min_lr not
    model, _, state = load_run(out)
    assert torch.equal(model.hog_bias, state["model"]["hog_bias"]) and model.heads[0][-1].out_channels == 54
    line = error_line(cli("pretrain", "--resume", "--out", out, "--hog-bins", "9", "--epochs", "2"))
    assert "was pretrained with hog_bins 18, not 9" in line
