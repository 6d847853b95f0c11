import json

import pytest
import torch
from safetensors.torch import load_file
from test_pretrain_cli import error_line
from timm.optim import param_groups_weight_decay
from torch import nn

from conftest import TINY_ARCH, assert_plain_timm_loads, official_side_by_side_loss, tiny_pretrain_args
from mimzoo.archs import get_arch
from mimzoo.engine.config import PretrainConfig
from mimzoo.fusion import default_layers
from mimzoo.methods import get_method, resolve_defaults
from mimzoo.methods.mae import MAE
from mimzoo.models.encoder import encode_visible
from mimzoo.targets import lowpass_filter, lowpass_radius, norm_pix, patchify

LAYERS = [0, 2, 4, 6, 8, 11]


@pytest.fixture()
def mff() -> MAE:
    torch.manual_seed(0)
    return get_method("mff").build(get_arch(TINY_ARCH), resolve_defaults(PretrainConfig(method="mff", arch=TINY_ARCH)))


@pytest.mark.parametrize("depth,expected", [(12, LAYERS), (24, [0, 4, 8, 12, 16, 23]), (4, [0, 1, 2, 3]), (1, [0])])
def test_default_layers(depth, expected):
    assert default_layers(depth) == expected


def test_the_config_records_the_arch_default_layers():
    resolved = resolve_defaults(PretrainConfig(method="mff", arch="vit_large_patch16_224"))
    assert (resolved.crop, resolved.target, resolved.mff_layers) == ("src", "pixel", [0, 4, 8, 12, 16, 23])


def test_fusion_weights_start_uniform_sum_to_one_and_are_logged(mff):
    assert mff.fusion.layers == LAYERS and len(mff.fusion.projections) == 5
    assert torch.allclose(mff.fusion.weights(), torch.full((6,), 1 / 6))
    with torch.no_grad():
        mff.fusion.logits.normal_()
    out = mff(torch.randn(2, 3, 32, 32))
    assert torch.allclose(out.logs["fusion_weights"], mff.fusion.weights()) and out.logs["fusion_weights"].shape == (6,)
    assert out.logs["fusion_weights"].sum().item() == pytest.approx(1)


def test_decoder_reads_the_final_norm_of_the_average_of_raw_levels(mff):
    # identity projections and uniform weights: the fusion is the plain mean of the raw block outputs
    for proj in mff.fusion.projections:
        nn.init.eye_(proj.weight)
    images, keep = torch.randn(2, 3, 32, 32), torch.randperm(64)[:16].expand(2, 16)
    raw = encode_visible(mff.encoder, images, keep, taps=LAYERS).taps
    expected = mff.encoder.norm(torch.stack(raw).mean(dim=0))
    assert torch.allclose(mff.encode(images, keep), expected, atol=1e-5)
    # one level, the last block: MFF's decoder input is MAE's
    alone = MAE(get_arch(TINY_ARCH), fusion=[11])
    alone.encoder.load_state_dict(mff.encoder.state_dict())
    assert torch.allclose(alone.encode(images, keep), encode_visible(mff.encoder, images, keep).tokens, atol=1e-6)


def test_gradients_reach_every_tapped_block_projection_and_fusion_logit(mff):
    mff(torch.randn(2, 3, 32, 32)).loss.backward()
    tapped = [mff.encoder.blocks[i] for i in LAYERS]
    for module in [*tapped, *mff.fusion.projections]:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert torch.all(mff.fusion.logits.grad != 0)


def test_fusion_parameters_sit_outside_the_encoder_and_the_logits_are_decayed(mff):
    assert not any("fusion" in k for k in mff.encoder.state_dict())
    decayed = next(g for g in param_groups_weight_decay(mff, 0.05) if g["weight_decay"] > 0)["params"]
    assert any(p is mff.fusion.logits for p in decayed)  # the reference decays them (no bias/norm exemption)



# What the official code computes (open-mmlab/mmpretrain MFF @ee7f2e88: MFFViT, MAEPretrainDecoder, MAEPretrainHead,
# run side by side in fp64 with the setup of official_side_by_side_loss and mimzoo's position tables; docs/parity.md):
# its loss and the norms of eight of its gradients (all of them agreed to 1e-15)
OFFICIAL_MFF_LOSS = 0.9820659501364598
OFFICIAL_MFF_GRAD_NORMS = {"encoder.patch_embed.proj.weight": 1.0588618508765635e-06,
                           "encoder.cls_token": 8.940715365484952e-07,
                           "decoder.mask_token": 0.0012903463856984761,
                           "encoder.blocks.0.attn.qkv.weight": 9.910216955820795e-07,
                           "encoder.blocks.11.mlp.fc2.weight": 8.032071083828456e-07,
                           "fusion.logits": 4.612515201344935e-07,
                           "fusion.projections.0.weight": 3.848407651529038e-06,
                           "fusion.projections.4.weight": 5.302261506185908e-06}


def test_loss_and_gradients_are_the_official_codes(mff):
    assert official_side_by_side_loss(mff).item() == pytest.approx(OFFICIAL_MFF_LOSS, rel=1e-12)
    params = dict(mff.named_parameters())
    for name, norm in OFFICIAL_MFF_GRAD_NORMS.items():
        assert params[name].grad.norm().item() == pytest.approx(norm, rel=1e-9), name


def test_mff_with_the_lowpass_target_reconstructs_the_lowpassed_image():
    cfg = resolve_defaults(PretrainConfig(method="mff", arch=TINY_ARCH, target="lowpass"))
    model = get_method("mff").build(get_arch(TINY_ARCH), cfg)
    images = torch.randn(2, 3, 32, 32)
    expected = norm_pix(patchify(lowpass_filter(images, lowpass_radius(32)), 4))
    assert model.fusion is not None and torch.allclose(model(images).target, expected, atol=1e-5)


@pytest.fixture(scope="module")
def mff_run(tmp_path_factory, npz_pack):
    from typer.testing import CliRunner

    from mimzoo_cli.app import app

    out = tmp_path_factory.mktemp("mff") / "r"
    args = tiny_pretrain_args(npz_pack, out, "--method", "mff", "--batch-size", "20", "--log-every", "1")
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return out


def test_two_step_pretrain_logs_fusion_weights_and_exports_plain_timm(mff_run, tmp_path):
    config = json.loads((mff_run / "config.json").read_text())
    assert (config["method"], config["crop"], config["target"], config["mff_layers"]) == ("mff", "src", "pixel", LAYERS)
    lines = [json.loads(line) for line in (mff_run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    assert all(len(line["fusion_weights"]) == 6 and sum(line["fusion_weights"]) == pytest.approx(1, abs=1e-5)
               for line in lines)
    assert lines[1]["fusion_weights"] != lines[0]["fusion_weights"]  # learned
    state = torch.load(mff_run / "checkpoint.pt", weights_only=True)["model"]
    assert "fusion.logits" in state and "fusion.projections.4.weight" in state  # trained and resumable
    exported = load_file(mff_run / "export" / "model.safetensors")
    assert not any("fusion" in k or k.startswith("decoder") for k in exported)
    assert_plain_timm_loads(mff_run / "export")


def test_resume_with_other_layers_is_refused(mff_run, cli):
    line = error_line(cli("pretrain", "--resume", "--out", mff_run, "--mff-layers", "5,11"))
    assert "pretrained with mff_layers [0, 2, 4, 6, 8, 11], not [5, 11]; drop --mff-layers" in line


@pytest.mark.parametrize("args,message", [
    (["--mff-layers", "0,6,12"], "--mff-layers 0,6,12: block indices must be in 0..11 for this 12-block encoder"),
    (["--mff-layers", "0,6,4,11"], "list each block once, in increasing order"),
    (["--mff-layers", "0,4,4,11"], "list each block once, in increasing order"),
    (["--mff-layers", "0,4"], "end with the last block, 11"),
    (["--mff-layers", "0;11"], "comma-separated block indices like 0,2,4,6,8,11, not '0;11'"),
    (["--method", "localmim", "--mff-layers", "0,11"], "--method localmim does not take --fusion (or --mff-layers): "
                                                       "its decoders each read their own encoder block"),
    (["--no-fusion", "--mff-layers", "0,11"], "--mff-layers picks the blocks --fusion fuses; drop --no-fusion"),
])
def test_bad_mff_layers_one_clear_line(cli, npz_pack, tmp_path, args, message):
    args = ["--method", "mff", *args]  # a later --method overrides this one
    assert message in error_line(cli(*tiny_pretrain_args(npz_pack, tmp_path / "r", *args)))
    assert not (tmp_path / "r").exists()
