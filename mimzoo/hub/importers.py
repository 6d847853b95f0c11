"""``mimzoo import``: MAE checkpoints that already exist, as mimzoo MAE weights (then written as an export).

Two layouts are read, both without running any code from the file (``torch.load(weights_only=True)`` or
safetensors):

- **official MAE** (facebookresearch/mae ``models_mae.MaskedAutoencoderViT``): a ``.pth`` holding the state dict
  under ``model`` (``main_pretrain.py``'s checkpoints, which also hold the run's ``args``; the released
  ``mae_visualize_vit_*.pth``) or a bare state dict. Its encoder keys are already timm's; the decoder is
  ``decoder_embed``, ``mask_token``, ``decoder_blocks.N``, ``decoder_norm``, ``decoder_pred``. Encoder-only
  releases (``mae_pretrain_vit_*.pth``) import as an encoder.
- **transformers** ``ViTMAEForPreTraining`` (``facebook/vit-mae-base``): a folder with ``config.json`` and
  ``model.safetensors`` or ``pytorch_model.bin``, in the Hub's layout (``vit.encoder.layer.N.attention.attention.
  query``, ``decoder.decoder_layers.N``), transformers 5's in-memory names (``vit.layers.N.attention.q_proj``) or
  what its ``save_pretrained`` writes (``decoder.decoder_encoder.layer.N``). Separate q/k/v become timm's fused qkv.

The weights are mapped onto mimzoo's MAE of the matching arch and must then fit it exactly; the fixed sin-cos
position embeddings must equal mimzoo's (so the imported model computes what the source computed).
"""

from __future__ import annotations

import argparse
import math
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import mimzoo
from mimzoo.archs import arch_for, get_arch
from mimzoo.engine.checkpoint import unreadable_because
from mimzoo.engine.init_from import sha256_of
from mimzoo.engine.report import Reporter
from mimzoo.errors import MimzooError, one_line
from mimzoo.hub.export import DEFAULT_LICENSE, slug, write_export
from mimzoo.hub.layout import previous_export, read_json
from mimzoo.hub.resolve import read_safetensors, shape_mismatch
from mimzoo.methods import get_method
from mimzoo.methods.mae import MAE

FORMATS = ("auto", "mae", "transformers")
MAE_PAPER_MASK_RATIO = 0.75


@dataclass
class Imported:
    """MAE weights in mimzoo's names: ``model`` holds them (its decoder is fresh when ``encoder_only``)."""

    model: MAE
    encoder_only: bool
    source: dict[str, Any]  # format, file, sha256 and what the source says of its training
    notes: list[str] = field(default_factory=list)


def import_mae(path: Path, fmt: str = "auto", arch: str | None = None, encoder_only: bool = False,
               norm_pix_loss: bool | None = None) -> Imported:
    """Read an MAE checkpoint (see the module docstring) into mimzoo's MAE.

    arch: the mimzoo arch (default: from the tensor shapes); encoder_only: keep only the encoder even where the file
    has a decoder; norm_pix_loss: the target the model was trained with, where the file does not say (official
    checkpoints without ``args``; default True, MAE's recipe).
    """
    path = Path(path).expanduser()
    if fmt not in FORMATS:
        raise MimzooError(f"unknown --format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if not path.exists():
        raise MimzooError(f"{path} does not exist; give an official MAE .pth or a transformers ViTMAE folder")
    if fmt == "auto":
        fmt = "transformers" if path.is_dir() or path.suffix == ".safetensors" else "mae"
    state, options, weights_file = (_read_transformers if fmt == "transformers" else _read_official)(path)
    if norm_pix_loss is not None:
        options["norm_pix_loss"] = norm_pix_loss
    options.setdefault("norm_pix_loss", True)
    options.setdefault("mask_ratio", MAE_PAPER_MASK_RATIO)
    has_decoder = any(k.startswith("decoder.") for k in state)
    keep_decoder = has_decoder and not encoder_only
    if not keep_decoder:
        state = {k: v for k, v in state.items() if k.startswith("encoder.")}
    name = arch or _arch_from_shapes(state, path)
    model = MAE(get_arch(name), mask_ratio=options["mask_ratio"], norm_pix_loss=options["norm_pix_loss"])
    _check_heads(model, options, path)
    _check_fixed_positions(model, state, path)
    state.pop("decoder.pos_embed", None)
    expected = {k: v for k, v in model.state_dict().items() if keep_decoder or k.startswith("encoder.")}
    mismatch = shape_mismatch({k: tuple(v.shape) for k, v in expected.items()},
                              {k: tuple(v.shape) for k, v in state.items()}, "mimzoo needs")
    if mismatch:
        hint = " (import only its encoder with --encoder-only)" if keep_decoder and "decoder." in mismatch else ""
        raise MimzooError(f"{path} does not fit mimzoo's MAE {name}: {mismatch}{hint}")
    model.load_state_dict(state, strict=keep_decoder)
    notes = [] if keep_decoder else [
        "encoder only: " + ("--encoder-only was given" if has_decoder else "the checkpoint holds no decoder")
        + "; the export has no pretrainer.safetensors (no reconstructions or whole-model continued pretraining)"]
    if options.pop("layer_norm_eps", 1e-6) != 1e-6:
        notes.append("the source's LayerNorm eps differs from timm's 1e-6 (transformers' default is 1e-12); "
                     "features differ from the source's by rounding only")
    source = {"format": fmt, "file": weights_file.name, "sha256": sha256_of(weights_file), **options}
    return Imported(model.eval(), not keep_decoder, source, notes)


# ---- official MAE ------------------------------------------------------------------------------------------
_OFFICIAL_DECODER = (
    (r"mask_token", "decoder.mask_token"),
    (r"decoder_embed\.", "decoder.embed."),
    (r"decoder_pos_embed", "decoder.pos_embed"),
    (r"decoder_blocks\.", "decoder.blocks."),
    (r"decoder_norm\.", "decoder.norm."),
    (r"decoder_pred\.", "decoder.pred."),
)
# what the args of main_pretrain.py say about the weights (kept in the record) and how mimzoo names it
_OFFICIAL_ARGS = {"model": "model", "input_size": "input_size", "mask_ratio": "mask_ratio",
                  "norm_pix_loss": "norm_pix_loss", "epochs": "epochs", "blr": "blr", "batch_size": "batch_size",
                  "accum_iter": "accum", "warmup_epochs": "warmup_epochs", "weight_decay": "weight_decay"}


def _read_official(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    checkpoint = _torch_load(path)
    if isinstance(checkpoint, dict) and {"config", "step", "rng"} <= checkpoint.keys():  # pretrain's, not MAE's
        raise MimzooError(f"{path} is a mimzoo run's checkpoint, which needs no import: export its run with "
                          f"mimzoo export {path.parent}")
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MimzooError(f"{path} is not an MAE checkpoint: expected a state dict, or one under 'model'")
    renamed = {}
    for key, tensor in state.items():
        for pattern, new in _OFFICIAL_DECODER:
            if re.match(pattern, key):
                key = re.sub(f"^{pattern}", new, key)
                break
        else:
            key = f"encoder.{key}"
        renamed[key] = tensor
    args = checkpoint.get("args") if isinstance(checkpoint, dict) else None
    options = {ours: getattr(args, theirs) for theirs, ours in _OFFICIAL_ARGS.items() if hasattr(args, theirs)}
    return renamed, options, path


def _torch_load(path: Path) -> Any:
    """``torch.load`` that runs no code: tensors and plain containers, plus main_pretrain.py's argparse args."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise MimzooError(f"{path} holds more than tensors and plain values, which mimzoo does not unpickle "
                          f"(it never runs code from a checkpoint): {one_line(exc, 160)}") from None
    except Exception as exc:  # a damaged or foreign file fails in torch's unpickler with any error type
        raise MimzooError(f"cannot read {path} as a PyTorch checkpoint ({unreadable_because(path, exc)}); it "
                          "is damaged or not a checkpoint") from None


# ---- transformers ViTMAE -----------------------------------------------------------------------------------
_HF_LAYER = re.compile(r"^(?:vit\.)?(?:encoder\.layer|layers)\.(\d+)\.(.+)$")
_HF_DECODER_LAYER = re.compile(r"^decoder\.(?:decoder_layers|decoder_encoder\.layer)\.(\d+)\.(.+)$")
_HF_IN_LAYER = {  # transformers 4 (the Hub's files) and 5 names -> timm's Block
    "layernorm_before.": "norm1.", "layernorm_after.": "norm2.",
    "attention.attention.query.": "attn.q.", "attention.q_proj.": "attn.q.",
    "attention.attention.key.": "attn.k.", "attention.k_proj.": "attn.k.",
    "attention.attention.value.": "attn.v.", "attention.v_proj.": "attn.v.",
    "attention.output.dense.": "attn.proj.", "attention.o_proj.": "attn.proj.",
    "intermediate.dense.": "mlp.fc1.", "mlp.fc1.": "mlp.fc1.",
    "output.dense.": "mlp.fc2.", "mlp.fc2.": "mlp.fc2.",
}
_HF_OTHER = {
    "embeddings.cls_token": "encoder.cls_token",
    "embeddings.position_embeddings": "encoder.pos_embed",
    "embeddings.patch_embeddings.projection.weight": "encoder.patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "encoder.patch_embed.proj.bias",
    "layernorm.weight": "encoder.norm.weight",
    "layernorm.bias": "encoder.norm.bias",
    "decoder.mask_token": "decoder.mask_token",
    "decoder.decoder_pos_embed": "decoder.pos_embed",
    "decoder.decoder_embed.weight": "decoder.embed.weight",
    "decoder.decoder_embed.bias": "decoder.embed.bias",
    "decoder.decoder_norm.weight": "decoder.norm.weight",
    "decoder.decoder_norm.bias": "decoder.norm.bias",
    "decoder.decoder_pred.weight": "decoder.pred.weight",
    "decoder.decoder_pred.bias": "decoder.pred.bias",
}
_HF_CONFIG = {"mask_ratio": "mask_ratio", "norm_pix_loss": "norm_pix_loss", "image_size": "input_size",
              "num_attention_heads": "heads", "decoder_num_attention_heads": "decoder_heads",
              "layer_norm_eps": "layer_norm_eps"}


def _read_transformers(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    folder = path if path.is_dir() else path.parent
    config = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    if config and config.get("model_type") not in ("vit_mae", None):
        raise MimzooError(f"{folder / 'config.json'} is a {config.get('model_type')!r} model, not transformers' "
                          "vit_mae (ViTMAEForPreTraining)")
    if config.get("qkv_bias") is False:
        raise MimzooError(f"{folder} has no attention biases (qkv_bias false); mimzoo's ViTs have them")
    weights = path if path.is_file() else next(
        (folder / name for name in ("model.safetensors", "pytorch_model.bin") if (folder / name).is_file()), None)
    if weights is None:
        raise MimzooError(f"{folder} has no model.safetensors or pytorch_model.bin: not a transformers model folder")
    if weights.suffix == ".safetensors":
        state = read_safetensors(weights)
    else:
        state = _torch_load(weights)
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        renamed[_hf_name(key, weights)] = tensor
    options = {ours: config[theirs] for theirs, ours in _HF_CONFIG.items() if theirs in config}
    return _fuse_qkv(renamed), options, weights


def _hf_name(key: str, weights: Path) -> str:
    for pattern, prefix in ((_HF_LAYER, "encoder.blocks"), (_HF_DECODER_LAYER, "decoder.blocks")):
        match = pattern.match(key)
        if match:
            index, rest = match.groups()
            for theirs, ours in _HF_IN_LAYER.items():
                if rest.startswith(theirs):
                    return f"{prefix}.{index}.{ours}{rest.removeprefix(theirs)}"
            break
    name = _HF_OTHER.get(key.removeprefix("vit.")) or _HF_OTHER.get(key)
    if name is None:
        raise MimzooError(f"{weights} has a tensor {key!r} that transformers' ViTMAEForPreTraining does not have")
    return name


def _fuse_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Separate q, k, v projections -> timm's one ``qkv`` (rows q, then k, then v)."""
    fused = {k: v for k, v in state.items() if not re.search(r"\.attn\.[qkv]\.", k)}
    for key in [k for k in state if ".attn.q." in k]:
        parts = [state.get(key.replace(".attn.q.", f".attn.{n}.")) for n in "qkv"]
        if any(p is None for p in parts):
            raise MimzooError(f"{key.replace('.attn.q.', '.attn.k/v.')} is missing: the attention is incomplete")
        fused[key.replace(".attn.q.", ".attn.qkv.")] = torch.cat(parts, dim=0)
    return fused


# ---- checks --------------------------------------------------------------------------------------------------
def _arch_from_shapes(state: dict[str, torch.Tensor], path: Path) -> str:
    """The mimzoo arch of an encoder, from its patch embedding and position embedding (one cls token)."""
    patch, pos = state.get("encoder.patch_embed.proj.weight"), state.get("encoder.pos_embed")
    if patch is None or pos is None or patch.ndim != 4 or pos.ndim != 3:
        raise MimzooError(f"{path} has no ViT patch and position embeddings: not an MAE checkpoint")
    grid = math.isqrt(pos.shape[1] - 1)
    name = arch_for(patch.shape[0], patch.shape[2], grid * patch.shape[2])
    if name is None or grid * grid != pos.shape[1] - 1:
        raise MimzooError(f"{path}: a ViT of width {patch.shape[0]} with {pos.shape[1]} position slots is not one "
                          "of timm's tiny/small/base/large/huge ViTs with a cls token; give --arch")
    return name


def _check_heads(model: MAE, options: dict[str, Any], path: Path) -> None:
    """Head counts do not show in the shapes: where the source says them, they must be the arch's."""
    found = {"heads": model.encoder.blocks[0].attn.num_heads, "decoder_heads": model.decoder.blocks[0].attn.num_heads}
    for key, ours in found.items():
        theirs = options.pop(key, ours)
        if theirs != ours:
            raise MimzooError(f"{path} has {theirs} {key.replace('_', ' ')}, mimzoo's {model.arch.name} has {ours}")


def _check_fixed_positions(model: MAE, state: dict[str, torch.Tensor], path: Path) -> None:
    """MAE's decoder positions are fixed sin-cos, which mimzoo recomputes rather than stores: the file's must match
    (the encoder's are loaded from the file, whatever they hold)."""
    theirs, ours = state.get("decoder.pos_embed"), model.decoder.pos_embed
    if theirs is not None and theirs.shape == ours.shape and not torch.allclose(theirs.float(), ours, atol=1e-5):
        raise MimzooError(f"{path}: the decoder's position embedding is not MAE's fixed 2-D sin-cos embedding; "
                          "import the encoder alone with --encoder-only")


def import_checkpoint(path: Path, out_dir: Path, fmt: str = "auto", arch: str | None = None,
                      encoder_only: bool = False, norm_pix_loss: bool | None = None, dataset: str = "imagenet-1k",
                      license: str | None = None, reporter: Reporter | None = None) -> tuple[Path, Imported]:
    """Import an MAE checkpoint as a mimzoo export in ``out_dir`` (timm encoder, card, mimzoo.json and, where the
    source has a decoder, pretrainer.safetensors); returns the folder and what was imported."""
    previous = previous_export(Path(out_dir))  # a folder that is not an export stops before any work
    imported = import_mae(path, fmt, arch, encoder_only, norm_pix_loss)
    model = imported.model
    record = {
        "mimzoo_version": mimzoo.__version__,
        "method": "mae",
        "arch": model.arch.name,
        "paper": get_method("mae").paper,
        "dataset": dataset,
        "license": license or DEFAULT_LICENSE,
        "repo_id": None,
        "config": {"method": "mae", "arch": model.arch.name, "crop": "rrc", "target": "pixel",
                   "mask_ratio": model.mask_ratio, "norm_pix_loss": model.norm_pix_loss},
        "pretraining": None,  # not mimzoo's run: what the source says is in imported_from
        "imported_from": {**imported.source, "notes": imported.notes},
        "results": [],
    }
    tag = f"mimzoo_mae_{slug(dataset)}_imported"
    folder = write_export(Path(out_dir), model, record, tag, not imported.encoder_only, previous, reporter)
    return folder, imported
