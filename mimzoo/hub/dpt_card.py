"""The model card of a trained DPT (``mimzoo segment``'s OUT/model): rewritten after smp's ``save_pretrained``,
whose own card says ``license: mit`` and names only the split, with huggingface_hub's ModelCard.

The weights derive from the backbone, so the card takes its licence from the backbone's ``pretrained_cfg`` (as
exported), and says what a user needs to run the model: the data, class names, normalisation and input multiple.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from mimzoo.engine.atomic import atomic_path
from mimzoo.hub.card import TASKS
from mimzoo.hub.datasets import hub_dataset_id
from mimzoo.hub.layout import CARD

TEMPLATE = Path(__file__).with_name("dpt_card.md")
UNKNOWN_LICENSE = "other"  # the Hub's id for a licence the card cannot name


def write_dpt_card(folder: Path, info: dict[str, Any], results: dict[str, Any]) -> None:
    """Replace FOLDER/README.md with the card of the DPT saved there. info: backbone (spec), architecture,
    license, dataset (mimzoo's short data name), classes, mean, std, multiple, ignore_index, params,
    encoder_params, intermediate, fusion; results: ``segment``'s results."""
    hub_id = hub_dataset_id(info["dataset"])
    task = TASKS["segment"]
    data = ModelCardData(
        library_name="segmentation-models-pytorch",
        pipeline_tag="image-segmentation",
        license=info["license"] or UNKNOWN_LICENSE,
        tags=["segmentation-models-pytorch", "semantic-segmentation", "dpt", "mimzoo", "timm"],
        datasets=[hub_id] if hub_id else None,
        eval_results=[EvalResult(task_type=task.task_type, dataset_type=hub_id or info["dataset"],
                                 dataset_name=info["dataset"], dataset_split=results["split"],
                                 metric_type=task.metric_type, metric_name=task.metric_name,
                                 metric_value=round(results["miou"], 2))],
        model_name=f"DPT on {info['backbone']}",
    )
    card = ModelCard.from_template(data, template_path=str(TEMPLATE), **info, split=results["split"],
                                   epochs=results["epochs"], miou=f"{results['miou']:.2f}",
                                   pixel_accuracy=f"{results['pixel_accuracy']:.2f}")
    with atomic_path(Path(folder) / CARD) as tmp:
        card.save(tmp)
