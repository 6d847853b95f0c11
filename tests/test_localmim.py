import json

import pytest
import torch
from test_pretrain_cli import PLAIN_TIMM_CHECK, error_line

from conftest import TINY_ARCH, run_python, tiny_pretrain_args
from mimzoo.archs import get_arch
from mimzoo.errors import MimzooError
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


def test_hog_of_a_flat_image_is_zero_and_of_a_vertical_edge_peaks_in_the_horizontal_gradient_bin():
    flat = hog_features(torch.full((1, 3, 16, 16), 0.7), [2, 4])
    assert all(torch.equal(f, torch.zeros_like(f)) for f in flat)
    edge = torch.zeros(1, 3, 16, 16)
    edge[..., 8:] = 1.0  # dark left half, bright right half: the gradient points along x
    cells = hog_features(edge, [4])[0].view(4, 4, 3, 9)  # (cell row, cell col, channel, bin)
    on_edge = cells[:, 1:3]  # the cell columns touching x = 7..8
    assert torch.allclose(on_edge[..., 0], torch.ones(4, 2, 3)) and on_edge[..., 1:].abs().max() == 0
    assert cells[:, [0, 3]].abs().max() == 0  # flat away from the edge


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
    check = run_python(PLAIN_TIMM_CHECK, str(out / "export"), str(tmp_path / "f.pt"))
    assert check.returncode == 0, check.stderr


def test_resume_with_another_target_is_refused(cli, npz_pack, tmp_path):
    out = tmp_path / "run"
    assert cli(*tiny_pretrain_args(npz_pack, out, "--method", "localmim", "--target", "pixel",
                                   "--batch-size", "20")).exit_code == 0
    line = error_line(cli("pretrain", "--resume", "--out", out, "--target", "lowpass", "--epochs", "2"))
    assert "was pretrained with target 'pixel', not 'lowpass'" in line
