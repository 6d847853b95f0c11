"""Continued pretraining: ``mimzoo pretrain --init-from SPEC`` starts a run from weights that already exist.

SPEC is any backbone spec (``mimzoo.hub.resolve``). Its encoder must fit the run's encoder exactly (same tensors,
same shapes; anything else stops with one line naming them). When SPEC is a mimzoo export (a folder, or its Hub repo
in the cache) whose ``pretrainer.safetensors`` is of the run's method and has the run's shapes, the whole pretrainer
starts from it (decoder, mask token, fusion weights, ...); otherwise only the encoder does and the rest starts from
the method's initialisation. The config records what was loaded (file, sha256, part) beside the spec.

A resumed run ignores --init-from: its checkpoint already holds the weights.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch

from mimzoo.archs import arch_for
from mimzoo.engine.config import PretrainConfig
from mimzoo.engine.distributed import DistContext, all_gather_object
from mimzoo.errors import MimzooError
from mimzoo.hub.layout import PRETRAINER, RECORD, WEIGHTS, read_json
from mimzoo.hub.resolve import locate_backbone, read_safetensors, safetensors_shapes, shape_mismatch
from mimzoo.methods import Pretrainer


def init_from(ctx: DistContext, model: Pretrainer, cfg: PretrainConfig) -> str:
    """Load ``cfg.init_from`` into ``model`` on every process, record it in ``cfg.init_weights`` and return a message.

    Every process reads the spec itself (so no rank waits on another's file system); a spec that fails on any
    process, or that names different weights on different nodes (e.g. other cache snapshots), stops every process
    with the same one-line error instead of training from different starts.
    """
    try:
        outcome: tuple[dict[str, str], str] | str = load_init_weights(cfg.init_from, model, cfg)
    except MimzooError as exc:
        outcome = str(exc)
    outcomes = all_gather_object(ctx, outcome)
    for other in outcomes:
        if isinstance(other, str):
            raise MimzooError(other)
    digests = [record["sha256"][:12] for record, _ in outcomes]
    if len(set(digests)) > 1:
        raise MimzooError(f"--init-from {cfg.init_from} names different weights on different processes (sha256 "
                          f"{', '.join(digests)} by rank): give every node the same files")
    cfg.init_weights, message = outcomes[0]
    return message


def load_init_weights(spec: str, model: Pretrainer, cfg: PretrainConfig) -> tuple[dict[str, str], str]:
    """Load ``spec`` into ``model`` in place; returns the record for the config ({file, sha256, part}) and a message
    saying what was loaded (and, for the encoder alone, why the rest starts fresh)."""
    info = locate_backbone(spec, cfg.arch)  # a bare .safetensors file is read as the run's arch
    found = safetensors_shapes(info.weights)
    mismatch = shape_mismatch(_shapes(model.encoder.state_dict()), found, "the run's encoder needs")
    if mismatch:
        raise MimzooError(f"--init-from {spec} does not fit the encoder of --arch {cfg.arch}: {mismatch}"
                          f"{_arch_hint(found, cfg.arch)}")
    pretrainer, why_not = _matching_pretrainer(info.weights, model, cfg.method)
    if pretrainer is not None:
        model.load_state_dict(read_safetensors(pretrainer), strict=True)
        record = {"file": pretrainer.name, "sha256": sha256_of(pretrainer), "part": "pretrainer"}
        return record, f"started from {spec}: the whole {cfg.method} pretrainer (sha256 {record['sha256'][:12]})"
    model.encoder.load_state_dict(read_safetensors(info.weights), strict=True)
    record = {"file": info.weights.name, "sha256": sha256_of(info.weights), "part": "encoder"}
    return record, (f"started from the encoder of {spec} (sha256 {record['sha256'][:12]}); the rest of the "
                    f"{cfg.method} model starts fresh: {why_not}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _matching_pretrainer(weights: Path, model: Pretrainer, method: str) -> tuple[Path | None, str]:
    """The ``pretrainer.safetensors`` beside an export's encoder when it is of ``method`` and fits ``model``
    exactly, else None and the reason."""
    folder = weights.parent
    if weights.name != WEIGHTS or not (folder / PRETRAINER).is_file() or not (folder / RECORD).is_file():
        return None, "the spec holds an encoder only (no mimzoo pretrainer beside it)"
    source_method = read_json(folder / RECORD).get("method")
    if source_method != method:
        return None, f"its pretrainer is {source_method}, not {method}"
    mismatch = shape_mismatch(_shapes(model.state_dict()), safetensors_shapes(folder / PRETRAINER), "the run needs")
    if mismatch:
        return None, f"its pretrainer does not fit this run's: {mismatch}"
    return folder / PRETRAINER, ""


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _arch_hint(found: dict[str, tuple[int, ...]], arch: str) -> str:
    """'; the weights look like --arch NAME' when a ViT's patch embedding and position embedding say which."""
    if "patch_embed.proj.weight" not in found or "pos_embed" not in found:
        return ""
    width, _, patch, _ = found["patch_embed.proj.weight"]
    tokens = found["pos_embed"][1]
    for prefix in (1, 0):  # a cls token's position slot, or none (no_embed_class)
        grid = math.isqrt(max(tokens - prefix, 0))
        if grid and grid * grid == tokens - prefix:
            name = arch_for(width, patch, grid * patch)
            return f"; these weights look like --arch {name}" if name and name != arch else ""
    return ""
