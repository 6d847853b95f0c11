import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_ARCH, assert_plain_timm_loads, official_side_by_side_loss, tiny_pretrain_args
from mimzoo.archs import get_arch
from mimzoo.data.loader import IMAGENET_MEAN, IMAGENET_STD
from mimzoo.data.transforms import SimpleResizedCropFlip
from mimzoo.engine.config import PretrainConfig
from mimzoo.errors import MimzooError
from mimzoo.methods import get_method, resolve_defaults
from mimzoo.targets import image_filter, lowpass_filter, lowpass_mask, lowpass_radius, norm_pix, patchify

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def wave(size: int, fy: int, fx: int) -> torch.Tensor:
    i, j = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.cos(2 * math.pi * (fy * i + fx * j) / size).float()


@pytest.mark.parametrize("size,bins", [(224, 5024), (32, 112)])
def test_lowpass_mask_keeps_the_references_bins(size, bins):
    # mmselfsup LowFreqTargetGenerator: a circle of radius 40 (scaled with the image) centred at ((H-1)/2, (W-1)/2)
    # of the fftshift-ed spectrum; a DC-centred circle would keep 5025 and 101 bins
    mask = lowpass_mask(size, size, lowpass_radius(size), torch.device("cpu"))
    assert mask.sum() == bins
    assert torch.equal(mask, mask.flip(0, 1))  # symmetric about the half-integer centre, not about DC (size / 2)
    reach = int(lowpass_radius(size) + 0.5)  # rows from DC along the DC column: DC - reach is in, DC + reach out
    assert (mask[size // 2 - reach, size // 2], mask[size // 2 + reach, size // 2]) == (1, 0)


def test_lowpass_is_the_references_on_known_waves():
    size, radius = 32, lowpass_radius(32)  # 5.71: the CIFAR zoo's regime
    i, j = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    phase = 2 * math.pi * (5 * i + 2 * j) / size
    both_in = 0.1 * wave(size, 2, 1)  # spectral peaks of (2, 1) at distances 1.6 and 2.9 from the centre: kept
    both_out = 0.1 * wave(size, 9, 8)  # (9, 8): both peaks outside: removed
    # (5, 2): the peak at -f (distance 4.7) is inside, the one at +f (6.0) outside, so the reference's target is
    # |0.5 + 0.1 e^{-i phase}| = sqrt(0.25 + 0.01 + 0.1 cos(phase)), not the wave itself
    one_sided = 0.2 * torch.cos(phase)
    rgb = (0.5 + both_in + both_out + one_sided).expand(1, 3, size, size)
    out = lowpass_filter((rgb - MEAN) / STD, radius) * STD + MEAN
    expected = ((0.5 + both_in + 0.1 * torch.exp(-1j * phase)).abs()).expand_as(out)
    assert torch.allclose(out, expected.float(), atol=1e-5)
    assert (out - (0.5 + both_in + one_sided)).abs().max() > 0.05  # a DC-centred filter would keep the wave


def test_lowpass_is_fp32_under_autocast_and_leaves_the_input_alone():
    images = torch.randn(2, 3, 32, 32)
    before = images.clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lowpass_filter(images.bfloat16(), 6.0)
    assert out.dtype == torch.float32 and torch.equal(images, before)


def test_radius_scales_with_image_size():
    assert lowpass_radius(224) == 40
    assert lowpass_radius(32) == pytest.approx(5.714, abs=1e-3)
    assert image_filter("lowpass", 32).keywords["radius"] == pytest.approx(40 * 32 / 224)
    assert image_filter("lowpass", 32, radius=3).keywords["radius"] == 3
    assert image_filter("pixel", 32) is None


@pytest.mark.parametrize("target,radius,message", [("hogwash", None, "unknown target"),
                                                    ("lowpass", 40.0, r"outside \(0, 22.6\)")])
def test_bad_target_options(target, radius, message):
    with pytest.raises(MimzooError, match=message):
        image_filter(target, 32, radius)


@pytest.mark.parametrize("width,resized_width", [(60, 48), (91, 72)])  # 91 * 32 / 40 = 72.8: 72, not 73
def test_src_keeps_aspect_and_spans_the_short_side(width, resized_width):
    # a width x 40 image whose pixels encode their coordinates; torchvision's Resize(32) truncates the long side
    y, x = np.mgrid[0:40, 0:width]
    img = Image.fromarray(np.stack([x * 2, y * 6, np.zeros_like(x)], -1).astype(np.uint8))
    resized = np.asarray(img.resize((resized_width, 32), Image.BILINEAR))
    resized = np.pad(resized, ((4, 4), (4, 4), (0, 0)), mode="reflect")
    src = SimpleResizedCropFlip(32)
    windows = [resized[top : top + 32, left : left + 32] for top in range(9) for left in range(resized_width - 23)]
    for seed in range(20):
        view = src(img, torch.Generator().manual_seed(seed)).permute(1, 2, 0).numpy()
        # each view is an unscaled window of the short-side-resized image (possibly flipped)
        assert any(np.array_equal(view, w) or np.array_equal(view[:, ::-1], w) for w in windows)


def test_pixmim_pretrain_runs_and_exports_a_plain_timm_backbone(cli, npz_pack, tmp_path):
    out = tmp_path / "pixmim"
    result = cli(*tiny_pretrain_args(npz_pack, out, "--method", "pixmim", "--epochs", "1"))
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["method"], config["crop"], config["target"]) == ("pixmim", "src", "lowpass")
    assert (config["min_lr"], config["no_weight_decay"]) == (0.0, ["*pos_embed", "*cls_token", "*mask_token"])
    exported = json.loads((out / "export" / "config.json").read_text())
    assert exported["pretrained_cfg"]["tag"].startswith("mimzoo_pixmim_")
    assert_plain_timm_loads(out / "export")


@pytest.mark.parametrize("extra,expected", [(["--method", "mae", "--target", "lowpass"], ("rrc", "lowpass")),
                                            (["--method", "mae", "--crop", "src"], ("src", "pixel")),
                                            (["--method", "pixmim", "--crop", "rrc"], ("rrc", "lowpass")),
                                            (["--method", "mff", "--target", "lowpass"], ("src", "lowpass"))])
def test_pixmim_parts_combine_independently(cli, npz_pack, tmp_path, extra, expected):
    out = tmp_path / "ablation"
    result = cli(*tiny_pretrain_args(npz_pack, out, *extra, "--batch-size", "20"))
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["crop"], config["target"]) == expected


def test_pixmim_model_reconstructs_the_lowpassed_image():
    cfg = resolve_defaults(PretrainConfig(method="pixmim", arch=TINY_ARCH))
    model = get_method("pixmim").build(get_arch(TINY_ARCH), cfg)
    images = torch.randn(2, 3, 32, 32)
    expected = norm_pix(patchify(lowpass_filter(images, lowpass_radius(32)), 4))
    assert torch.allclose(model(images).target, expected, atol=1e-5)


# What the official code computes (open-mmlab/mmselfsup PixMIM @db861f30: MAEViT, MAEPretrainDecoder, MAEPretrainHead,
# LowFreqTargetGenerator at radius 40 x 32 / 224, run side by side in fp64 with the setup of official_side_by_side_loss
# and mimzoo's position tables; docs/parity.md): its loss and six gradient norms
OFFICIAL_PIXMIM_LOSS = 0.9821869692569277
OFFICIAL_PIXMIM_GRAD_NORMS = {"encoder.patch_embed.proj.weight": 1.3882648706381114e-06,
                              "encoder.cls_token": 8.860764025333262e-07,
                              "decoder.mask_token": 0.001769635632693284,
                              "encoder.blocks.0.attn.qkv.weight": 1.1134769163651116e-06,
                              "encoder.blocks.11.mlp.fc2.weight": 1.5876739532667755e-06,
                              "decoder.pred.weight": 0.02434976015165318}


def test_loss_and_gradients_are_the_official_codes():
    model = get_method("pixmim").build(get_arch(TINY_ARCH), resolve_defaults(PretrainConfig(method="pixmim",
                                                                                            arch=TINY_ARCH)))
    assert official_side_by_side_loss(model).item() == pytest.approx(OFFICIAL_PIXMIM_LOSS, rel=1e-12)
    params = dict(model.named_parameters())
    for name, norm in OFFICIAL_PIXMIM_GRAD_NORMS.items():
        assert params[name].grad.norm().item() == pytest.approx(norm, rel=1e-9), name

