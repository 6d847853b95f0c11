"""The model card: rendered from an export's ``config.json`` and ``mimzoo.json`` with huggingface_hub's ModelCard.

The card is never edited by hand. Whatever changes what it says (a measured result, the repo it is pushed to)
changes ``mimzoo.json`` first, and the card is rendered again from it, so the two cannot disagree.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from safetensors import safe_open

from mimzoo.engine.atomic import atomic_path
from mimzoo.errors import MimzooError
from mimzoo.hub.citations import citation
from mimzoo.hub.datasets import hub_dataset_id
from mimzoo.hub.layout import CARD, CONFIG, PRETRAINER, RECORD, WEIGHTS, read_json, read_record

TEMPLATE = Path(__file__).with_name("model_card.md")

@dataclass(frozen=True)
class Task:
    """How a downstream task's result appears: the Hub task type, the protocol (the card's results table) and a
    metric type and name of its own. The model-index groups results by task type, dataset and split (keeping one
    task name per group), so kNN, linear-probe and fine-tune accuracy on one split differ by metric type, and the
    metric name says the protocol; no task name is written, as it would be one protocol's for all of them."""

    task_type: str
    protocol: str
    metric_type: str
    metric_name: str


TASKS: dict[str, Task] = {
    "knn": Task("image-classification", "k-NN classification", "knn_accuracy", "kNN top-1"),
    "linprobe": Task("image-classification", "Linear probing", "linear_probe_accuracy", "Linear-probe top-1"),
    "linprobe_adamw": Task("image-classification", "Linear probing (standardised features, AdamW)",
                           "linear_probe_adamw_accuracy", "Linear-probe top-1 (AdamW)"),
    "finetune": Task("image-classification", "Fine-tuning", "finetune_accuracy", "Fine-tune top-1"),
    "segment": Task("image-segmentation", "Semantic segmentation (DPT)", "mean_iou", "mIoU (class mean)"),
}
TAGS = ["timm", "mimzoo", "masked-image-modeling", "vision-transformer"]


def render_card(config: dict[str, Any], record: dict[str, Any], weights: Path) -> ModelCard:
    """The card for an encoder ``config`` (timm's config.json), its ``record`` (mimzoo.json) and weights file."""
    pcfg = config.get("pretrained_cfg", {})
    repo_id = record.get("repo_id")
    model_name = repo_id.split("/")[-1] if repo_id else f"{record['arch']}.{pcfg.get('tag', record['method'])}"
    data = ModelCardData(
        library_name="timm",
        pipeline_tag="image-feature-extraction",
        license=record["license"],
        tags=TAGS[:2] + [record["method"]] + TAGS[2:],
        datasets=[hub_id] if (hub_id := hub_dataset_id(record["dataset"])) else None,
        model_name=model_name,
        eval_results=[_eval_result(row) for row in record["results"]] or None,
    )
    paper = record.get("paper", "")
    number = paper.removeprefix("arXiv:")
    params, embed_dim = _size(weights)
    return ModelCard.from_template(
        data,
        template_path=str(TEMPLATE),
        model_name=model_name,
        method=record["method"],
        parts=" + ".join(record.get("parts", [])),
        paper=paper,
        paper_link=f"[{paper}](https://arxiv.org/abs/{number})" if paper else "no paper",
        dataset=record["dataset"],
        epochs=f"{record['pretraining']['epochs']:g}" if record.get("pretraining") else None,
        imported_from=record.get("imported_from"),
        has_pretrainer=(weights.parent / PRETRAINER).is_file(),
        architecture=config["architecture"],
        model_args=", ".join(f"{k}={v}" for k, v in config.get("model_args", {}).items()),
        params=f"{params / 1e6:.1f}",
        embed_dim=embed_dim,
        input_size="x".join(str(s) for s in pcfg.get("input_size", [])),
        mean=pcfg.get("mean"),
        std=pcfg.get("std"),
        interpolation=pcfg.get("interpolation"),
        crop_pct=pcfg.get("crop_pct"),
        license=record["license"],
        results=[{**row, "task": TASKS[row["task"]].protocol, "metric": _metric_name(row)}
                 for row in record["results"]],
        recipe=recipe_rows(record),
        deviations=record.get("deviations", []),
        repo=repo_id or "ORG/NAME",
        pushed=repo_id is not None,
        citation=citation(paper) if paper else "",
        init_from=_init_from(record["config"]),
    )


def _init_from(config: dict[str, Any]) -> dict[str, str] | None:
    """Where a continued pretraining run started (``--init-from``): spec, file, sha256 and part, or None."""
    if not config.get("init_weights"):
        return None
    return {"spec": config["init_from"], **config["init_weights"]}


def recipe_rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    """What the run measured about itself first, then every setting of its config, as (name, value) rows."""
    run = record.get("pretraining")
    if run is None:  # an import: what the source says of its training, then the settings mimzoo runs it with
        source = record["imported_from"]
        return [(f"source {key}", str(value)) for key, value in source.items() if key not in ("file", "sha256")] + [
            (key, value if isinstance(value, str) else json.dumps(value)) for key, value in record["config"].items()]
    rows = [
        ("epochs trained", f"{run['epochs']:g}"),
        ("optimizer steps", str(run["steps"])),
        ("processes", str(run["processes"])),
        ("effective batch", str(run["effective_batch"])),
        ("peak learning rate", f"{run['lr']:.3g}"),
        ("final training loss", f"{run['final_loss']:.4f}" if run["final_loss"] is not None else "-"),
    ]
    # settings that are None belong to other methods' parts (unused here), so they are left out
    return rows + [(key, value if isinstance(value, str) else json.dumps(value))
                   for key, value in record["config"].items() if value is not None]


def write_record(folder: Path, record: dict[str, Any]) -> None:
    """Write ``mimzoo.json`` and the card rendered from it (each file atomically)."""
    card = render_card(read_json(folder / CONFIG), record, folder / WEIGHTS)
    with atomic_path(folder / RECORD) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    with atomic_path(folder / CARD) as tmp:
        card.save(tmp)


def update_record(export_dir: Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Apply ``change`` to an export's ``mimzoo.json`` in place and render its card again."""
    record = read_record(export_dir)
    change(record)
    write_record(export_dir, record)
    return record


def add_result(export_dir: Path, task: str, dataset: str, value: float, split: str | None = None,
               metric_name: str | None = None) -> None:
    """Record a measured result in an export (replacing an earlier one for the same task, dataset and split) and
    regenerate its card, whose model-index then lists it with the task's metric type (``TASKS``). dataset: mimzoo's
    short name of the data (its Hub id, where it has one, goes into the model-index); split: the split the number
    is from; metric_name: what the card shows (default: the task's, e.g. 'kNN top-1')."""
    if task not in TASKS:
        raise MimzooError(f"unknown task {task!r} for a result; use one of: {', '.join(TASKS)}")
    row = {"task": task, "dataset": dataset, "split": split, "metric": TASKS[task].metric_type, "value": value,
           "metric_name": metric_name or TASKS[task].metric_name}

    def replace(record: dict[str, Any]) -> None:
        same = ("task", "dataset", "split")
        record["results"] = [r for r in record["results"] if any(r.get(k) != row[k] for k in same)] + [row]

    update_record(Path(export_dir), replace)


def _metric_name(row: dict[str, Any]) -> str:
    return row.get("metric_name") or TASKS[row["task"]].metric_name


def _eval_result(row: dict[str, Any]) -> EvalResult:
    task = TASKS[row["task"]]
    return EvalResult(task_type=task.task_type, dataset_type=hub_dataset_id(row["dataset"]) or row["dataset"],
                      dataset_name=row["dataset"], dataset_split=row["split"], metric_type=task.metric_type,
                      metric_name=_metric_name(row), metric_value=row["value"])


def _size(weights: Path) -> tuple[int, int]:
    """(number of parameters, embedding width) read from the safetensors header, without loading tensors."""
    with safe_open(weights, "pt") as f:
        shapes = {key: f.get_slice(key).get_shape() for key in f.keys()}
    return sum(math.prod(shape) for shape in shapes.values()), shapes["patch_embed.proj.weight"][0]
