"""Export a run as a Hub-ready folder (see ``mimzoo.hub.layout``): the one path from a checkpoint to a backbone.

``mimzoo export RUN`` and the end of ``mimzoo pretrain`` both call ``export_run``. The folder is built beside its
destination and renamed into place only when complete, so a failed export leaves no half-written folder. It
replaces only a previous export (never a folder of other files, a file or a run folder), keeping what that one
recorded about the same weights.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from timm.models import save_for_hf

import mimzoo
from mimzoo.archs import Arch, get_arch
from mimzoo.data.loader import IMAGENET_MEAN, IMAGENET_STD
from mimzoo.engine.atomic import atomic_dir
from mimzoo.engine.checkpoint import CHECKPOINT, load_checkpoint
from mimzoo.engine.config import PretrainConfig
from mimzoo.engine.metrics_log import read_metrics
from mimzoo.engine.report import Reporter
from mimzoo.errors import MimzooError, one_line
from mimzoo.hub.card import write_record
from mimzoo.hub.layout import CONFIG, PRETRAINER, WEIGHTS, previous_export, read_json, read_record
from mimzoo.hub.resolve import check_fits, read_safetensors
from mimzoo.methods import Pretrainer, deviations, get_method, parts

DEFAULT_LICENSE = "cc-by-nc-4.0"  # MAE's code and weights are CC-BY-NC 4.0, as are timm's MAE entries
# settings of where and how a run ran, not of what it learned: kept out of exports (and off the Hub)
RUNTIME_KEYS = ("out", "data", "workers", "device", "compile", "log_every", "ckpt_every")


def dataset_name(data_spec: str) -> str:
    """A short dataset name for tags and cards: ``builtin`` -> cifar10-sample, ``/data/imagenet/train`` ->
    imagenet, ``pack.npz:test`` -> pack."""
    if data_spec.startswith("builtin"):
        return "cifar10-sample"
    path = Path(data_spec.split(".npz:")[0].removesuffix(".npz"))
    if path.name.lower() in ("train", "training", "images") and path.parent.name:
        path = path.parent
    return slug(path.name) or "data"


def slug(text: str) -> str:
    """Lower case, runs of other characters as one dash: safe in a timm tag (``arch.tag``) and a file name."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def pretrained_cfg(arch: Arch, tag: str, license: str, paper: str) -> dict[str, Any]:
    """The preprocessing and provenance timm keeps with the weights (MAE trains on ImageNet mean/std)."""
    return {
        "tag": tag,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "interpolation": "bicubic",
        "crop_pct": 1.0 if arch.img_size < 64 else 0.875,
        "license": license,
        "paper_ids": paper,
        "num_classes": 0,
    }


def export_run(run_dir: Path, out_dir: Path | None = None, dataset: str | None = None,
               license: str | None = None, reporter: Reporter | None = None) -> Path:
    """Export the checkpoint of ``run_dir`` to ``out_dir`` (default ``RUN/export``); returns the folder.

    ``out_dir`` must be new, an empty folder or a previous mimzoo export (see ``previous_export``); a previous
    export's repo id is kept, and so are its results when its encoder holds exactly the new weights.
    dataset: the name cards and tags give the pretraining data (default: derived from the run's ``--data``);
    license: the licence id recorded in the config and card (default ``DEFAULT_LICENSE``);
    reporter: told what was kept or dropped from the previous export.
    """
    license = license or DEFAULT_LICENSE
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "export"
    previous = previous_export(out_dir)  # before the (slow) checkpoint load: a refused folder stops at once
    model, cfg, state = load_run(run_dir)
    spec = get_method(cfg.method)
    run_config = run_dir / "config.json"  # the resolved config the run wrote, with its process count
    processes = read_json(run_config).get("world_size", 1) if run_config.is_file() else 1
    record = {
        "mimzoo_version": mimzoo.__version__,
        "method": cfg.method,
        "parts": parts(cfg),  # what the method's preset and the run's options composed
        "arch": cfg.arch,
        "paper": spec.paper,
        "dataset": dataset or dataset_name(cfg.data),
        "license": license,
        "repo_id": None,
        "config": {k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_KEYS},
        "deviations": deviations(cfg.method),  # from the reference code, as this mimzoo version trains
        "pretraining": _pretraining_record(cfg, state["step"], processes, read_metrics(run_dir, state["step"])),
        "results": [],
    }
    tag = f"mimzoo_{cfg.method}_{slug(record['dataset'])}_ep{math.floor(record['pretraining']['epochs'])}"
    return write_export(out_dir, model, record, tag, previous=previous, reporter=reporter)


def write_export(out_dir: Path, model: Pretrainer, record: dict[str, Any], tag: str, with_pretrainer: bool = True,
                 previous: dict[str, Any] | None = None, reporter: Reporter | None = None) -> Path:
    """Write ``model`` as an export folder: the encoder as timm saves it (``pretrained_cfg`` with ``tag`` and the
    record's licence and paper), ``record`` as mimzoo.json and the card, and the whole model unless
    ``with_pretrainer`` is False (its decoder was never trained). ``previous``: the record of the export being
    replaced (``previous_export(out_dir)``, checked by the caller before its slow work), whose repo id and
    same-weights results carry over."""
    arch = get_arch(record["arch"])
    with atomic_dir(out_dir.resolve()) as tmp:  # a symbolic link keeps pointing at the export
        save_for_hf(model.encoder, tmp, safe_serialization=True,
                    model_config={"pretrained_cfg": pretrained_cfg(arch, tag, record["license"], record["paper"])})
        _keep_shape_args_only(tmp / CONFIG, arch)
        check_fits(read_json(tmp / CONFIG), tmp / WEIGHTS)
        if with_pretrainer:
            save_file(model.state_dict(), tmp / PRETRAINER,
                      metadata={"method": record["method"], "arch": record["arch"]})
        if previous is not None:
            _carry_over(previous, out_dir, tmp / WEIGHTS, record, reporter or Reporter())
        write_record(tmp, record)
    return out_dir


def _carry_over(previous: dict[str, Any], old_dir: Path, new_weights: Path, record: dict[str, Any],
                reporter: Reporter) -> None:
    """Keep in ``record`` what the export being replaced recorded: its repo id (where it is published), and its
    results only if they were measured on exactly these encoder weights; say what was kept or dropped."""
    record["repo_id"] = previous.get("repo_id")
    results = previous["results"]
    if not results:
        return
    names = ", ".join(f"{row.get('task')} {row.get('dataset')}" for row in results)
    if _same_tensors(old_dir / WEIGHTS, new_weights):
        record["results"] = results
        reporter.message(f"kept the {len(results)} result(s) recorded in {old_dir} ({names}): same encoder weights")
    else:
        reporter.message(f"dropped the {len(results)} result(s) recorded in {old_dir} ({names}): they were measured "
                         "on other encoder weights; run the downstream commands again to measure these")


def _same_tensors(a: Path, b: Path) -> bool:
    """Whether two safetensors files hold the same tensors (names, dtypes, shapes and values)."""
    first, second = read_safetensors(a), read_safetensors(b)
    return first.keys() == second.keys() and all(
        first[k].dtype == second[k].dtype and torch.equal(first[k], second[k]) for k in first)


def load_run(run_dir: Path) -> tuple[Pretrainer, PretrainConfig, dict[str, Any]]:
    """The pretraining model of a run's checkpoint (strictly loaded, on the CPU), its config and the whole state."""
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT).is_file():
        raise MimzooError(f"{run_dir} is not a run folder: it has no {CHECKPOINT} (make one with mimzoo pretrain)")
    state = load_checkpoint(run_dir / CHECKPOINT, torch.device("cpu"), ("model", "step", "config"))
    cfg = PretrainConfig.from_dict(state["config"])
    return _built(cfg, state["model"], run_dir / CHECKPOINT), cfg, state


def load_pretrainer(export_dir: Path) -> Pretrainer:
    """The whole pretraining model of an export (for reconstructions or continued pretraining), strictly loaded."""
    export_dir = Path(export_dir)
    record = read_record(export_dir)
    if not (export_dir / PRETRAINER).is_file():
        raise MimzooError(f"{export_dir} has no {PRETRAINER}: only the encoder was published")
    return _built(PretrainConfig.from_dict(record["config"]), read_safetensors(export_dir / PRETRAINER),
                  export_dir / PRETRAINER)


def _built(cfg: PretrainConfig, weights: dict[str, torch.Tensor], source: Path) -> Pretrainer:
    """``cfg``'s pretraining model holding ``weights``; weights that do not fit it are a one-line error."""
    model = get_method(cfg.method).build(get_arch(cfg.arch), cfg)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise MimzooError(f"{source} does not fit a {cfg.method} {cfg.arch} model: {one_line(exc)}") from None
    return model


def _pretraining_record(cfg: PretrainConfig, step: int, processes: int,
                        metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """What the run did, as measured: steps, epochs, batch, lr and the last logged loss."""
    effective = cfg.batch_size * cfg.accum * processes
    logged = [m for m in metrics if m.get("epoch")]
    # metrics lines carry step and epoch, so their ratio gives the steps per epoch of the run
    epochs = round(step / round(logged[-1]["step"] / logged[-1]["epoch"]), 4) if logged else float(cfg.epochs)
    return {
        "steps": step,
        "epochs": epochs,
        "processes": processes,
        "effective_batch": effective,
        "lr": cfg.blr * effective / 256,
        "final_loss": metrics[-1]["loss"] if metrics else None,
    }


def _keep_shape_args_only(config_path: Path, arch: Arch) -> None:
    """timm records every factory kwarg (num_classes, in_chans, ...); keep only what reshapes the registry
    model, so ``timm.create_model(arch, num_classes=0, **model_args)`` works as documented."""
    config = json.loads(config_path.read_text())
    config.pop("model_args", None)
    if arch.model_args:
        config["model_args"] = dict(arch.model_args)
    config_path.write_text(json.dumps(config, indent=2))
