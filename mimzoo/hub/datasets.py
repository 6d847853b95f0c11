"""Hub dataset ids for the data names mimzoo records (a card's ``datasets:`` and its model-index's dataset type).

A name is mimzoo's short name of some data (``export.dataset_name``: ``cifar10-sample`` for the built-in sample,
``cifar10-jpeg-q75`` for the shared CIFAR-10 pack, or what ``--dataset`` said, e.g. ``imagenet-1k``). Only data
that is a copy or a subset of a Hub dataset gets that dataset's id; any other name (a local folder, CamVid, which
has no canonical Hub copy) gets None, so nothing is claimed that the Hub cannot link.
"""

from __future__ import annotations

# short name -> Hub dataset id; a name matches itself or itself followed by '-' (cifar10-sample, imagenet-1k-train)
HUB_DATASETS = {
    "cifar10": "uoft-cs/cifar10",
    "cifar-10": "uoft-cs/cifar10",
    "cifar100": "uoft-cs/cifar100",
    "cifar-100": "uoft-cs/cifar100",
    "imagenet-1k": "ILSVRC/imagenet-1k",
    "imagenet1k": "ILSVRC/imagenet-1k",
    "in1k": "ILSVRC/imagenet-1k",
}


def hub_dataset_id(name: str) -> str | None:
    """The Hub dataset id of a short data name, or None where the data is not known to be a Hub dataset."""
    name = name.lower()
    return next((hub_id for key, hub_id in HUB_DATASETS.items() if name == key or name.startswith(f"{key}-")), None)
