"""Parts compose across methods: --fusion, --mask-unit and --degradation train, reconstruct and export with every
method that can take them, and a combination that cannot exist stops with one line saying why."""

import json

import numpy as np
import pytest
import torch
from test_pretrain_cli import error_line

from conftest import TINY_ARCH, save_run_checkpoint, tiny_pretrain_args
from mimzoo.archs import get_arch
from mimzoo.data.sources import BUILTIN_SAMPLE
from mimzoo.engine.config import PretrainConfig
from mimzoo.engine.pretrain import resolve_run_config
from mimzoo.errors import MimzooError
from mimzoo.hub.resolve import load_backbone
from mimzoo.masking import random_token_mask
from mimzoo.methods import get_method, resolve_defaults
from mimzoo.targets import norm_pix, patchify
from mimzoo.viz import visualize
from mimzoo.viz.grid import DEMO_PHOTOS

BATCH = 4  # the pack's size: one optimizer step per run


@pytest.fixture(scope="module")
def one_batch_pack(tmp_path_factory):
    data = np.load(BUILTIN_SAMPLE)
    offsets = data["train_offsets"][: BATCH + 1]
    path = tmp_path_factory.mktemp("pack") / "pack.npz"
    np.savez(path, train_jpeg=data["train_jpeg"][: offsets[-1]], train_offsets=offsets,
             train_labels=data["train_labels"][:BATCH], classes=data["classes"])
    return path


# (options, what config.json must record, the parts the card lists after the host, extra figure panels)
COMBINATIONS = {
    # PixMIM on LSMAE (PixMIM's section 6 host): 2x2-patch mask units, i.e. 8-px units on 4-px patches
    "pixmim-on-lsmae": (["--method", "pixmim", "--mask-unit", "2"],
                        {"target": "lowpass", "crop": "src", "mask_unit": 2, "fusion": False},
                        "MAE + lowpass target + src crop + mask units of 2x2 patches", ["filtered target"]),
    # MFF on PixMIM, as the MFF paper reports it
    "mff-on-pixmim": (["--method", "pixmim", "--fusion"],
                      {"target": "lowpass", "fusion": True, "mff_layers": [0, 2, 4, 6, 8, 11]},
                      "MAE + lowpass target + src crop + fusion of blocks 0,2,4,6,8,11", ["filtered target"]),
    "mae-fusion-blur": (["--method", "mae", "--mff-layers", "5,11", "--degradation", "blur"],
                        {"fusion": True, "mff_layers": [5, 11], "degradation": "blur", "mask_ratio": 0.75},
                        "MAE + pixel target + rrc crop + fusion of blocks 5,11 + blur input", ["degraded input"]),
    "mff-distort-units": (["--method", "mff", "--degradation", "distort", "--mask-unit", "2"],
                          {"fusion": True, "degradation": "distort", "mask_unit": 2},
                          "MAE + pixel target + src crop + fusion of blocks 0,2,4,6,8,11 + mask units of 2x2 "
                          "patches + distort input", ["degraded input"]),
    "misalign-fusion-units": (["--method", "misalign", "--fusion", "--mask-unit", "2"],
                              {"degradation": "zoom-in", "fusion": True, "mask_unit": 2},
                              "MAE with Beyond Masking's decoder and loss + pixel target + rrc crop + fusion of "
                              "blocks 0,2,4,6,8,11 + mask units of 2x2 patches + zoom-in input",
                              ["target view", "predicted view"]),
    "misalign-zoom-out-units": (["--method", "misalign", "--degradation", "zoom-out", "--mask-unit", "4"],
                                {"degradation": "zoom-out", "mask_unit": 4, "fusion": False},
                                "MAE with Beyond Masking's decoder and loss + pixel target + rrc crop + mask units "
                                "of 4x4 patches + zoom-out input", ["target view", "predicted view"]),
    "localmim-decolor-units": (["--method", "localmim", "--degradation", "decolor", "--mask-unit", "2"],
                               {"target": "hog", "degradation": "decolor", "mask_unit": 2, "fusion": False},
                               "LocalMIM's multi-scale decoders + hog target + rrc crop + mask units of 2x2 patches "
                               "+ decolor input", ["degraded input", "x2 HOG predicted"]),
}


@pytest.mark.parametrize("name", COMBINATIONS)
def test_each_combination_trains_reconstructs_and_exports(cli, one_batch_pack, tmp_path, name):
    options, recorded, described, panels = COMBINATIONS[name]
    out = tmp_path / "run"
    result = cli(*tiny_pretrain_args(one_batch_pack, out, *options, "--batch-size", BATCH))
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert {key: config[key] for key in recorded} == recorded
    export = out / "export"
    record = json.loads((export / "mimzoo.json").read_text())
    assert record["pretraining"]["steps"] == 1 and " + ".join(record["parts"]) == described
    assert f"**Method:** {config['method']} = {described}" in (export / "README.md").read_text()
    # the figure rebuilds the whole pretrainer from the export, strictly, and draws the parts' panels
    shown, _ = visualize(export, tmp_path / "grid.png", images=[sorted(DEMO_PHOTOS.glob("*.jpg"))[0]])
    assert (tmp_path / "grid.png").is_file() and set(panels) <= set(shown.panels)
    encoder, _ = load_backbone(str(export))  # a plain timm ViT, strictly loaded
    assert encoder.patch_embed.proj.weight.shape[-1] == 4


def test_a_mask_unit_masks_whole_blocks_of_patches_at_the_ratio_over_blocks():
    torch.manual_seed(0)
    mask = random_token_mask(3, 64, 0.75, torch.device("cpu"), unit=2)
    blocks = mask.mask.view(3, 4, 2, 4, 2)
    assert torch.equal(blocks, blocks[:, :, :1, :, :1].expand_as(blocks))  # every patch of a block shares its bit
    assert mask.mask.sum(1).tolist() == [4 * (16 - int(16 * 0.25))] * 3
    for sample in range(3):  # idx_keep lists the visible patches; idx_restore un-shuffles them first
        visible = mask.idx_keep[sample]
        assert sorted(visible.tolist()) == torch.nonzero(mask.mask[sample] == 0).flatten().tolist()
        assert torch.equal(torch.argsort(mask.idx_restore[sample])[:16], visible)
    # unit 1 is MAE's per-patch mask, drawn exactly as before
    torch.manual_seed(1)
    patches = random_token_mask(2, 64, 0.75, torch.device("cpu"), unit=1)
    torch.manual_seed(1)
    assert torch.equal(patches.idx_keep, torch.argsort(torch.rand(2, 64), dim=1)[:, :16])


def test_a_degraded_input_keeps_the_clean_target():
    cfg = resolve_defaults(PretrainConfig(method="pixmim", arch=TINY_ARCH, degradation="blur"))
    model = get_method("pixmim").build(get_arch(TINY_ARCH), cfg)
    seen = []
    model.encoder.patch_embed.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    images = torch.randn(2, 3, 32, 32)
    out = model(images)
    assert not torch.allclose(seen[0], images, atol=1e-3)  # the encoder saw the blurred image
    assert torch.allclose(out.target, norm_pix(patchify(model.image_filter(images), 4)))  # the clean low-pass


@pytest.mark.parametrize("args,message", [
    (["--method", "localmim", "--fusion"], "--method localmim does not take --fusion (or --mff-layers)"),
    (["--method", "pixmim", "--degradation", "zoom-out"],
     "--method pixmim does not take --degradation zoom-out: it changes the view's geometry"),
    (["--mask-unit", "3"],
     "--mask-unit 3 does not tile the 8x8 patch grid of vit_tiny_patch4_32; use one of 1, 2, 4, 8"),
    (["--mask-unit", "0"], "--mask-unit 0 does not tile"),
    (["--mask-unit", "8"], "--mask-unit 8 leaves 1 mask unit(s) on the 8x8 patch grid, none visible at --mask-ratio "
                           "0.75"),
])
def test_combinations_that_cannot_exist_say_why_in_one_line(cli, one_batch_pack, tmp_path, args, message):
    assert message in error_line(cli(*tiny_pretrain_args(one_batch_pack, tmp_path / "r", *args)))
    assert not (tmp_path / "r").exists()


def test_a_resume_keeps_the_parts_and_an_older_config_reads_as_what_it_ran(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    ran = resolve_defaults(PretrainConfig(method="pixmim", arch=TINY_ARCH, out=str(out), mask_unit=2, fusion=True))
    save_run_checkpoint(out / "checkpoint.pt", ran.to_dict())
    for key, value in [("mask_unit", 1), ("fusion", False), ("degradation", "blur")]:
        with pytest.raises(MimzooError, match=f"pretrained with {key} "):
            resolve_run_config(PretrainConfig(out=str(out), **{key: value}), resume=True, explicit={"out", key})
    # config.json from before --fusion and --mask-unit: mff fused (and recorded its blocks), nothing else did
    for method, fused in [("mff", True), ("mae", False)]:
        old = resolve_defaults(PretrainConfig(method=method, arch=TINY_ARCH)).to_dict()
        del old["fusion"], old["mask_unit"]
        assert (PretrainConfig.from_dict(old).fusion, PretrainConfig.from_dict(old).mask_unit) == (fused, 1)
