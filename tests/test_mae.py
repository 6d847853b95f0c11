import pytest
import timm
import torch

from conftest import TINY_ARCH, official_side_by_side_loss
from mimzoo.archs import get_arch
from mimzoo.errors import MimzooError
from mimzoo.methods.mae import MAE
from mimzoo.models.encoder import encode_visible
from mimzoo.targets import masked_mse, norm_pix, patchify


@pytest.fixture(scope="module")
def mae():
    torch.manual_seed(0)
    return MAE(get_arch(TINY_ARCH)).eval()


def test_encoder_state_dict_is_a_timm_vit_state_dict(mae):
    reference = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=4)
    ours, theirs = mae.encoder.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(ours[k].shape == theirs[k].shape for k in ours)
    reference.load_state_dict(ours, strict=True)


def test_visible_encoding_of_all_tokens_matches_timm_forward(mae):
    images = torch.randn(2, 3, 32, 32)
    all_tokens = torch.arange(64).expand(2, 64)
    ours = encode_visible(mae.encoder, images, all_tokens).tokens
    assert torch.allclose(ours, mae.encoder.forward_features(images), atol=1e-5)


def test_visible_encoding_sees_only_kept_tokens(mae):
    images = torch.randn(1, 3, 32, 32)
    keep = torch.tensor([[5, 9, 20]])
    out = encode_visible(mae.encoder, images, keep, taps=[0, 11])
    assert out.tokens.shape == (1, 4, 192) and len(out.taps) == 2
    changed = images.clone()
    changed[..., :4, :4] += 5  # patch 0 is masked: the encoding must not move
    assert torch.equal(encode_visible(mae.encoder, changed, keep).tokens, out.tokens)


def test_position_embedding_is_fixed_sincos(mae):
    pos = mae.encoder.pos_embed
    assert not pos.requires_grad
    assert torch.all(pos[0, 0] == 0)  # cls slot
    assert pos[0, 1:, :48].abs().max() <= 1  # sin/cos values


def test_forward_loss_is_masked_mse_on_norm_pix_target(mae):
    torch.manual_seed(1)
    images = torch.randn(2, 3, 32, 32)
    out = mae(images)
    assert out.pred.shape == out.target.shape == (2, 64, 48)
    assert torch.allclose(out.target, norm_pix(patchify(images, 4)))
    assert out.mask.sum(1).tolist() == [48, 48]
    assert torch.allclose(out.loss, masked_mse(out.pred, out.target, out.mask))


def test_raw_pixel_target_without_norm_pix():
    model = MAE(get_arch(TINY_ARCH), norm_pix_loss=False)
    images = torch.randn(1, 3, 32, 32)
    assert torch.equal(model.target(images), patchify(images, 4))


def test_mae_initialisation():
    model = MAE(get_arch(TINY_ARCH))
    qkv = model.encoder.blocks[0].attn.qkv
    bound = (6 / (qkv.in_features + qkv.out_features)) ** 0.5
    assert qkv.weight.abs().max() <= bound and torch.all(qkv.bias == 0)
    assert 0.005 < model.decoder.mask_token.std() < 0.05


@pytest.mark.parametrize("name,fix", [("vit_tiny_patch5_32", "not a positive multiple"), ("resnet50", "unknown arch"),
                                      ("vit_gigantic_patch16_224", "unknown arch")])
def test_bad_arch_names(name, fix):
    with pytest.raises(MimzooError, match=fix):
        get_arch(name)


def test_arch_model_args():
    assert get_arch("vit_base_patch16_224").model_args == {}
    assert get_arch("vit_small_patch2_32").model_args == {"img_size": 32, "patch_size": 2}
    assert get_arch("vit_huge_patch14_224").timm_name == "vit_huge_patch14_224"


# What the official code computes (facebookresearch/mae models_mae.py @efb2a80, run side by side in fp64 with the
# weights, input and mask noise of official_side_by_side_loss; docs/parity.md): its loss and four gradient norms.
OFFICIAL_LOSS = 0.9820662568664439
OFFICIAL_GRAD_NORMS = {"encoder.patch_embed.proj.weight": 1.3459332911267058e-06,
                       "encoder.cls_token": 8.012986850364263e-07,
                       "decoder.mask_token": 0.0012904495513300746,
                       "encoder.blocks.11.mlp.fc2.weight": 1.4503440677664003e-06}


def test_loss_and_gradients_are_the_official_codes():
    model = MAE(get_arch(TINY_ARCH))
    assert official_side_by_side_loss(model).item() == pytest.approx(OFFICIAL_LOSS, rel=1e-12)
    params = dict(model.named_parameters())
    for name, norm in OFFICIAL_GRAD_NORMS.items():
        assert params[name].grad.norm().item() == pytest.approx(norm, rel=1e-9), name
