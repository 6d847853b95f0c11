"""Each method's recipe defaults (base lr, final lr, which parameters take weight decay) are its reference's."""

import fnmatch

import pytest
import torch

from conftest import TINY_ARCH, save_run_checkpoint
from mimzoo.archs import get_arch
from mimzoo.engine.config import PretrainConfig
from mimzoo.engine.pretrain import LEGACY_NO_WEIGHT_DECAY, resolve_run_config, weight_decay_groups
from mimzoo.methods import get_method, resolve_defaults

# (blr, min_lr) of each reference: MAE PRETRAIN.md (blr 1.5e-4) and main_pretrain.py:68 (min_lr 0); OpenMMLab's
# AdamW lr 1.5e-4 x 4096 / 256 with a cosine to eta_min 0; LocalMIM ViT/README.md (--blr 2e-4 for ViT-B) and
# run_pretrain.py:55 (min_lr 1e-6); Beyond Masking run_mae_pretraining.py:72-77 (lr 1.5e-4 per 256, min_lr 1e-5)
REFERENCE_LRS = {"mae": (1.5e-4, 0.0), "pixmim": (1.5e-4, 0.0), "mff": (1.5e-4, 0.0), "localmim": (2e-4, 1e-6),
                 "misalign": (1.5e-4, 1e-5)}


@pytest.mark.parametrize("method", REFERENCE_LRS)
def test_lr_defaults_are_the_references_and_explicit_values_win(method):
    cfg = resolve_defaults(PretrainConfig(method=method, arch=TINY_ARCH))
    assert (cfg.blr, cfg.min_lr) == REFERENCE_LRS[method]
    # 0 is a value, not "unset": an explicit --min-lr 0 stays 0
    explicit = resolve_defaults(PretrainConfig(method=method, arch=TINY_ARCH, blr=3e-3, min_lr=0.0))
    assert (explicit.blr, explicit.min_lr) == (3e-3, 0.0)


def decayed_names(method: str) -> tuple[set[str], dict[str, torch.nn.Parameter]]:
    """(names that take weight decay, every trainable parameter by name) of a tiny ``method`` model under its
    default rule."""
    cfg = resolve_defaults(PretrainConfig(method=method, arch=TINY_ARCH))
    model = get_method(method).build(get_arch(TINY_ARCH), cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = weight_decay_groups(model, cfg)
    assert sorted(g["weight_decay"] for g in groups) == [0.0, cfg.weight_decay]
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    return decayed, {n: p for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", ["mae", "localmim"])
def test_mae_and_localmim_decay_what_timms_add_weight_decay_decays(method):
    # official MAE main_pretrain.py:179 and LocalMIM run_pretrain.py:139 call timm 0.3.2's
    # optim_factory.add_weight_decay(model, wd) with no skip list: every trainable parameter with more than one
    # dimension and a name not ending in ".bias" takes the decay, the cls and mask tokens included
    decayed, trainable = decayed_names(method)
    assert decayed == {n for n, p in trainable.items() if p.ndim > 1 and not n.endswith(".bias")}
    assert "encoder.cls_token" in decayed and any(fnmatch.fnmatch(n, "decoder*.mask_token") for n in decayed)
    assert "encoder.pos_embed" not in trainable  # fixed sin-cos, as the reference's requires_grad=False


@pytest.mark.parametrize("method", ["pixmim", "mff", "misalign"])
def test_openmmlab_and_beyond_masking_keep_tokens_out_of_weight_decay(method):
    # mmselfsup/mmpretrain's mae config paramwise_cfg: 'ln', 'bias', 'pos_embed', 'mask_token', 'cls_token' at
    # decay_mult 0; Beyond Masking's no_weight_decay() {'pos_embed', 'cls_token', 'mask_token'}
    decayed, trainable = decayed_names(method)
    assert "encoder.cls_token" in trainable and "decoder.mask_token" in trainable
    assert not {n for n in decayed if n.endswith(("cls_token", "mask_token", ".bias")) or "norm" in n}
    assert "encoder.blocks.0.attn.qkv.weight" in decayed and "decoder.blocks.0.mlp.fc1.weight" in decayed
    if method == "mff":  # mmpretrain's proj_weights, (K, 1, 1, 1), matches no custom key: it takes the decay
        assert "fusion.logits" in decayed and "fusion.projections.0.weight" in decayed


def test_resume_keeps_the_runs_recipe_and_an_older_run_its_weight_decay_list(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    ran = resolve_defaults(PretrainConfig(method="localmim", arch=TINY_ARCH, out=str(out), blr=5e-4))
    save_run_checkpoint(out / "checkpoint.pt", ran.to_dict())
    given = PretrainConfig(out=str(out), epochs=3)
    resumed = resolve_defaults(resolve_run_config(given, resume=True, explicit={"out", "epochs"}))
    assert (resumed.blr, resumed.min_lr, resumed.no_weight_decay, resumed.epochs) == (5e-4, 1e-6, [], 3)
    lowered = resolve_run_config(PretrainConfig(out=str(out), min_lr=0.0), resume=True, explicit={"out", "min_lr"})
    assert lowered.min_lr == 0.0
    # a checkpoint from before config.json recorded the list was trained with the one list every method used
    old = {k: v for k, v in ran.to_dict().items() if k != "no_weight_decay"}
    save_run_checkpoint(out / "checkpoint.pt", old)
    resumed = resolve_defaults(resolve_run_config(PretrainConfig(out=str(out)), resume=True, explicit={"out"}))
    assert resumed.no_weight_decay == LEGACY_NO_WEIGHT_DECAY
