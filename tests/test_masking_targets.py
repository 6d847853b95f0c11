import pytest
import torch

from mimzoo.masking import gather_tokens, random_token_mask
from mimzoo.targets import masked_mse, norm_pix, patchify, unpatchify


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.9])
def test_mask_ratio_is_honoured_per_sample(ratio):
    m = random_token_mask(4, 64, ratio, torch.device("cpu"))
    keep = int(64 * (1 - ratio))
    assert m.idx_keep.shape == (4, keep)
    assert torch.all(m.mask.sum(1) == 64 - keep)
    # the kept indices are exactly the unmasked positions
    for b in range(4):
        assert set(m.idx_keep[b].tolist()) == set(torch.nonzero(m.mask[b] == 0).flatten().tolist())


def test_masks_differ_between_samples():
    m = random_token_mask(8, 64, 0.75, torch.device("cpu"))
    assert len({tuple(row.tolist()) for row in m.mask}) == 8


def test_idx_restore_puts_visible_then_masked_back_in_image_order():
    tokens = torch.arange(2 * 16).float().view(2, 16, 1).expand(2, 16, 3)
    m = random_token_mask(2, 16, 0.75, torch.device("cpu"))
    visible = gather_tokens(tokens, m.idx_keep)
    placeholder = torch.full((2, 16 - visible.shape[1], 3), -1.0)
    restored = gather_tokens(torch.cat([visible, placeholder], 1), m.idx_restore)
    keep = m.mask == 0
    assert torch.equal(restored[keep], tokens[keep])
    assert torch.all(restored[~keep] == -1)


def test_patchify_order_and_round_trip():
    images = torch.randn(2, 3, 8, 8)
    patches = patchify(images, 4)
    assert patches.shape == (2, 4, 48)
    # patch 1 is the top-right 4x4 block; values run (pixel-row, pixel-col, channel)
    assert torch.equal(patches[0, 1].view(4, 4, 3), images[0, :, :4, 4:].permute(1, 2, 0))
    assert torch.equal(unpatchify(patches, 4), images)


def test_norm_pix_zero_mean_unit_unbiased_var():
    t = norm_pix(torch.randn(2, 5, 48) * 3 + 7)
    assert torch.allclose(t.mean(-1), torch.zeros(2, 5), atol=1e-5)
    assert torch.allclose(t.var(-1), torch.ones(2, 5), atol=1e-4)


def test_masked_mse_ignores_visible_patches():
    target = torch.randn(2, 4, 6)
    mask = torch.tensor([[1.0, 0, 1, 0], [0, 0, 1, 1]])
    pred = target.clone()
    pred[mask == 0] += 100.0  # wrong only where visible: no loss
    assert masked_mse(pred, target, mask).item() == 0.0
    pred = target.clone()
    pred[mask == 1] += 2.0  # wrong by 2 on every masked value: loss 4
    assert masked_mse(pred, target, mask).item() == pytest.approx(4.0)
