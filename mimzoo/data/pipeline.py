"""The pretraining input pipeline, either path: views made with PIL in the workers (``--data-device cpu``) or
planned there and decoded and resampled on the training device (``--data-device gpu``, ``device_views``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from mimzoo.data.device_views import DeviceViewLoader, View, collate, device_views
from mimzoo.data.loader import ResumableSampler, ViewDataset, make_loader
from mimzoo.data.sources import ImageFolderSource, NpzPackSource


@dataclass
class Pipeline:
    dataset: Dataset
    sampler: ResumableSampler
    loader: object  # yields (uint8 views (B, 3, S, S), substituted indices); on the device for "gpu"


def view_pipeline(source: ImageFolderSource | NpzPackSource, view: View, seed: int, data_device: str,
                  device: torch.device, batch_size: int, workers: int, world_size: int = 1,
                  rank: int = 0) -> Pipeline:
    if data_device == "gpu":
        dataset, views = device_views(source, view, seed, device)
    else:
        dataset, views = ViewDataset(source, view, seed), None
    sampler = ResumableSampler(dataset, world_size, rank, seed)
    loader = make_loader(dataset, sampler, batch_size, workers, pin_memory=device.type == "cuda",
                         collate_fn=collate if views else None)
    return Pipeline(dataset, sampler, DeviceViewLoader(loader, views) if views else loader)
