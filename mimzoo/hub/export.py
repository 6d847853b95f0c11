"""Encoder export: a folder that plain timm loads strictly (``config.json`` + ``model.safetensors``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from timm.models import save_for_hf
from timm.models.vision_transformer import VisionTransformer

from mimzoo.archs import Arch
from mimzoo.data.loader import IMAGENET_MEAN, IMAGENET_STD
from mimzoo.engine.checkpoint import atomic_dir


def dataset_name(data_spec: str) -> str:
    """A short dataset name for tags: ``builtin`` -> cifar10-sample, a folder or pack -> its name."""
    if data_spec.startswith("builtin"):
        return "cifar10-sample"
    path = Path(data_spec.split(".npz:")[0].removesuffix(".npz"))
    return path.name or "data"


def pretrained_cfg(arch: Arch, method: str, data_spec: str, epochs: int, paper: str) -> dict[str, Any]:
    """The preprocessing and provenance timm keeps with the weights (MAE trains on ImageNet mean/std)."""
    return {
        "tag": f"mimzoo_{method}_{dataset_name(data_spec)}_ep{epochs}",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "interpolation": "bicubic",
        "crop_pct": 1.0 if arch.img_size < 64 else 0.875,
        "license": "cc-by-nc-4.0",
        "paper_ids": paper,
        "num_classes": 0,
    }


def export_encoder(encoder: VisionTransformer, arch: Arch, out_dir: Path, config: dict[str, Any],
                   paper: str) -> Path:
    """Write the encoder as a timm Hub folder, plus ``mimzoo.json`` (the run's config), atomically."""
    with atomic_dir(out_dir) as tmp:
        save_for_hf(
            encoder,
            tmp,
            model_config={"pretrained_cfg": pretrained_cfg(arch, config["method"], config["data"],
                                                           config["epochs"], paper)},
            safe_serialization=True,
        )
        _keep_shape_args_only(tmp / "config.json", arch)
        (tmp / "mimzoo.json").write_text(json.dumps({"arch": arch.name, "config": config}, indent=2))
    return out_dir


def _keep_shape_args_only(config_path: Path, arch: Arch) -> None:
    """timm records every factory kwarg (num_classes, in_chans, ...); keep only what reshapes the registry
    model, so ``timm.create_model(arch, num_classes=0, **model_args)`` works as documented."""
    config = json.loads(config_path.read_text())
    config.pop("model_args", None)
    if arch.model_args:
        config["model_args"] = dict(arch.model_args)
    config_path.write_text(json.dumps(config, indent=2))
