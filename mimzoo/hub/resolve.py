"""One resolver for every command's backbone argument.

A backbone spec is one of:
- ``hf-hub:ORG/NAME[@REVISION]``: a Hub repo, read from the local Hugging Face cache (``mimzoo pull`` fills it;
  nothing is downloaded at run time),
- ``local-dir:PATH`` or a plain folder path: an export folder (``config.json`` + ``model.safetensors``),
- a ``.safetensors`` file, described by the ``config.json`` beside it or else by ``arch`` (a mimzoo arch name),
- a zoo name (``mimzoo list``), which stands for its Hub repo;
- ``random:ARCH``: a mimzoo arch with timm's random initialisation, the from-scratch baseline of a downstream task.

Every spec ends in the same strict load: the weights must fit the config exactly (checked from the safetensors
header before anything is built), so a mismatch is a one-line error, not a silently resampled or partial model.
The one exception is timm's: a classifier checkpoint (``num_classes`` > 0, e.g. any ``*_in1k`` repo) loads without
its classifier, as ``timm.create_model(..., pretrained=True, num_classes=0)`` does, and says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import timm
import torch
from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from mimzoo.archs import get_arch
from mimzoo.errors import MimzooError, one_line
from mimzoo.hub.layout import CONFIG, RECORD, WEIGHTS, in_hub_cache, read_json, require_backbone_folder
from mimzoo.hub.names import parse_repo
from mimzoo.zoo import ZOO

HF_PREFIX = "hf-hub:"
LOCAL_PREFIX = "local-dir:"
RANDOM_PREFIX = "random:"
SPEC_FORMS = ("hf-hub:ORG/NAME[@REV], local-dir:PATH, an export folder, a .safetensors file, a zoo name or "
              "random:ARCH")


@dataclass(frozen=True)
class BackboneInfo:
    """Where a backbone came from and what it is.

    config: timm's ``config.json`` (``architecture``, ``model_args``, ``pretrained_cfg``); weights: the
    safetensors file loaded; export_dir: the local mimzoo export it belongs to, where downstream results are
    recorded (``mimzoo.hub.add_result``), or None (a Hub cache snapshot, a bare file, a plain timm folder).
    """

    spec: str
    config: dict[str, Any]
    weights: Path | None  # None for random:ARCH
    export_dir: Path | None = None
    repo_id: str | None = None
    revision: str | None = None
    dropped: tuple[str, ...] = ()  # the classifier tensors of a timm classifier checkpoint, left out of the backbone

    @property
    def notes(self) -> list[str]:
        """What a user should know about how the backbone was loaded."""
        if not self.dropped:
            return []
        return [f"{self.spec} is a {self.config.get('num_classes')}-class timm classifier; its classifier "
                f"({', '.join(self.dropped)}) is left out, as timm does for num_classes=0"]


def load_backbone(spec: str, arch: str | None = None, **model_kwargs: Any) -> tuple[VisionTransformer, BackboneInfo]:
    """Resolve ``spec`` and return the timm ViT (no head, strictly loaded) and its info.

    arch: mimzoo arch name for a ``.safetensors`` file without ``config.json``. model_kwargs: timm options on
    top of the config's model args (``drop_path_rate``, ``dynamic_img_size``, a new ``img_size``, whose position
    embedding timm resamples); heads are the caller's (``model.reset_classifier(k)``).
    """
    if spec.startswith(RANDOM_PREFIX):
        return _random_backbone(spec, **model_kwargs)
    info = locate_backbone(spec, arch)
    check_fits(info.config, info.weights)
    with torch.device("meta"):  # every tensor comes from the weights: skip timm's random init
        model = create_vit(info.config, **model_kwargs)
    state = read_safetensors(info.weights)
    info = replace(info, dropped=tuple(classifier_keys(info.config, state)))
    for key in info.dropped:
        del state[key]
    if model_kwargs:  # timm adapts the checkpoint to changed shapes (position-embedding grid, patch size)
        state = checkpoint_filter_fn(state, model)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise MimzooError(f"{info.weights} does not load with {model_kwargs}: {one_line(exc)}") from None
    unloaded = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if unloaded:  # a tensor the state dict does not hold (a non-persistent buffer) would stay uninitialised
        raise MimzooError(f"{info.config['architecture']} has tensors its weights do not hold: {unloaded[:3]}")
    return model, info


def _random_backbone(spec: str, **model_kwargs: Any) -> tuple[VisionTransformer, BackboneInfo]:
    """timm's randomly initialised ViT of a mimzoo arch, preprocessing as mimzoo's exports of that arch."""
    from mimzoo.hub.export import pretrained_cfg  # export builds on this module

    shape = get_arch(spec.removeprefix(RANDOM_PREFIX))
    config = {"architecture": shape.timm_name, "num_classes": 0, "model_args": dict(shape.model_args),
              "pretrained_cfg": pretrained_cfg(shape, "random_init", "apache-2.0", "")}
    return create_vit(config, **model_kwargs), BackboneInfo(spec, config, None)


def locate_backbone(spec: str, arch: str | None = None) -> BackboneInfo:
    """Find the weights and config a spec names, without building anything."""
    if spec.startswith(HF_PREFIX):
        return _from_cache(spec, *parse_repo(spec.removeprefix(HF_PREFIX)))
    if spec.startswith(LOCAL_PREFIX):
        return _from_folder(spec, Path(spec.removeprefix(LOCAL_PREFIX)).expanduser(), arch)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _from_folder(spec, path, arch)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise MimzooError(f"{path} is not a .safetensors file; a backbone is {SPEC_FORMS}")
        return _from_file(spec, path, arch)
    if spec in ZOO:
        return _from_cache(spec, ZOO[spec].repo_id, None)
    raise MimzooError(f"no backbone {spec!r}: not a file or folder, nor a zoo name (mimzoo list); use {SPEC_FORMS}")


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The snapshot folder of a repo in the Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME``), or None."""
    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except LocalEntryNotFoundError:
        return None


def create_vit(config: dict[str, Any], **model_kwargs: Any) -> VisionTransformer:
    """A headless timm ViT as ``config`` describes it, carrying its ``pretrained_cfg`` (mean, std, crop, ...)."""
    if not isinstance(config.get("architecture"), str):
        raise MimzooError("the config.json has no 'architecture' name: it is not a timm model config")
    for key in ("model_args", "pretrained_cfg"):
        if not isinstance(config.get(key, {}), dict):
            raise MimzooError(f"the config.json's {key!r} is a {type(config[key]).__name__}, not an object: it is "
                              "not a timm model config (restore it, or export the backbone again)")
    args = {**config.get("model_args", {}), **model_kwargs, "num_classes": 0}
    try:
        model = timm.create_model(config["architecture"], pretrained=False,
                                  pretrained_cfg_overlay=config.get("pretrained_cfg", {}), **args)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise MimzooError(f"cannot build {config['architecture']!r} with {args}: {one_line(exc)}") from None
    if not isinstance(model, VisionTransformer):
        raise MimzooError(f"{config['architecture']!r} is not a timm VisionTransformer; mimzoo backbones are ViTs")
    return model


def check_fits(config: dict[str, Any], weights: Path) -> None:
    """Raise a one-line error unless ``weights`` holds exactly the tensors, with the shapes, that ``config``'s
    model has. Reads only the safetensors header and builds the model on the meta device, so it is cheap."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in create_vit(config).state_dict().items()}
    found = safetensors_shapes(weights)
    for key in classifier_keys(config, found):
        del found[key]
    mismatch = shape_mismatch(expected, found, "the config needs")
    if mismatch:
        model = f"{config['architecture']} with {config.get('model_args', {})}"
        raise MimzooError(f"{weights} does not fit its config ({model}): {mismatch}")


def read_safetensors(weights: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a one-line error for a damaged or unreadable one."""
    try:
        return load_file(weights)
    except (OSError, SafetensorError) as exc:
        raise MimzooError(f"cannot read {weights}: {one_line(exc)}; restore the file (or pull or export it again)") \
            from None


def classifier_keys(config: dict[str, Any], names: Iterable[str]) -> list[str]:
    """The classifier tensors among ``names`` when ``config`` describes a timm classifier (``num_classes`` > 0):
    those under its ``pretrained_cfg['classifier']`` (timm's default ``head``), which a backbone does without."""
    if not config.get("num_classes"):
        return []
    classifier = config.get("pretrained_cfg", {}).get("classifier") or "head"
    prefixes = tuple(f"{name}." for name in ([classifier] if isinstance(classifier, str) else classifier))
    return sorted(name for name in names if name.startswith(prefixes))


def safetensors_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, read from a safetensors header only; a one-line error for an unreadable file."""
    try:
        with safe_open(weights, "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (OSError, SafetensorError) as exc:
        raise MimzooError(f"cannot read {weights}: {one_line(exc)}; restore the file (or pull or export it again)") \
            from None


def shape_mismatch(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]],
                   needs: str = "the model needs") -> str | None:
    """How ``found`` tensor shapes differ from ``expected`` (wrong shapes, missing, extra; the first three, then a
    count), or None when they match exactly."""
    problems = [f"{k} is {list(found[k])}, {needs} {list(expected[k])}"
                for k in sorted(expected.keys() & found.keys()) if tuple(found[k]) != tuple(expected[k])]
    problems += [f"{k} is missing" for k in sorted(expected.keys() - found.keys())]
    problems += [f"{k} is not part of the model" for k in sorted(found.keys() - expected.keys())]
    if not problems:
        return None
    return "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")


def _from_cache(spec: str, repo_id: str, revision: str | None) -> BackboneInfo:
    snapshot = cached_snapshot(repo_id, revision)
    name = f"{repo_id}@{revision}" if revision else repo_id
    if snapshot is None:
        raise MimzooError(f"{name} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}); "
                          f"download it once with `mimzoo pull {name}`")
    missing = [file for file in (CONFIG, WEIGHTS) if not (snapshot / file).is_file()]
    if missing:  # e.g. only config.json cached by an earlier timm call, or a repo that is no timm backbone
        raise MimzooError(f"{name} in the Hugging Face cache has no {' or '.join(missing)}: fetch the whole repo with "
                          f"`mimzoo pull {name}` (mimzoo loads timm repos with config.json and model.safetensors)")
    return BackboneInfo(spec, read_json(snapshot / CONFIG), snapshot / WEIGHTS, None, repo_id, revision)


def _from_folder(spec: str, folder: Path, arch: str | None) -> BackboneInfo:
    if not (arch and (folder / WEIGHTS).is_file()):
        require_backbone_folder(folder)
    return _from_file(spec, folder / WEIGHTS, arch)


def _from_file(spec: str, weights: Path, arch: str | None) -> BackboneInfo:
    """A weights file is described by the config.json beside it; ``arch`` is read only where there is none."""
    folder = weights.parent
    if (folder / CONFIG).is_file():
        config = read_json(folder / CONFIG)
    elif arch:
        shape = get_arch(arch)
        config = {"architecture": shape.timm_name, "num_classes": 0, "model_args": dict(shape.model_args)}
    else:
        raise MimzooError(f"{weights} has no {CONFIG} beside it; say what it is with --arch "
                          "(e.g. vit_base_patch16_224)")
    export_dir = (folder.resolve() if weights.name == WEIGHTS and (folder / RECORD).is_file()
                  and not in_hub_cache(folder) else None)
    return BackboneInfo(spec, config, weights, export_dir)

