"""Reproducible pretraining batches: per-sample seeded views, resumable epoch order, device-side normalisation."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mimzoo.data.images import UnreadableImage
from mimzoo.data.sources import ImageFolderSource, NpzPackSource
from mimzoo.device_constants import device_constant
from mimzoo.errors import MimzooError
from mimzoo.wording import counted, none_readable

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageSource(Protocol):
    """What :func:`load_readable` needs: an image source, a labelled split's source or a segmentation split."""

    def __len__(self) -> int: ...

    def load(self, index: int) -> Any: ...

    def describe(self, index: int) -> str: ...


class ViewDataset(Dataset):
    """Keyed by (epoch, index): (uint8 view (3, S, S), index of an unreadable image replaced by a neighbour, or -1).

    The view of sample i in epoch e depends only on (seed, e, i): results do not depend on the number of
    workers, and a resumed run sees exactly the views an uninterrupted one would. The epoch travels in the key
    (from :class:`ResumableSampler`), so persistent workers need no update between epochs. Unreadable or corrupt
    files are skipped (the next readable image stands in) and reported back so the trainer counts them.
    """

    def __init__(self, source: ImageFolderSource | NpzPackSource,
                 transform: Callable[[Image.Image, torch.Generator], torch.Tensor], seed: int) -> None:
        self.source, self.transform, self.seed = source, transform, seed
        load_readable(source, range(len(source)), 0)  # no readable image at all: one line now, not in a worker

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key
        gen = torch.Generator().manual_seed(view_seed(self.seed, epoch, index))
        img, _, bad = load_readable(self.source, range(len(self.source)), index)
        return self.transform(img, gen), bad


def view_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one view, the same on every platform and Python version."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def load_readable(source: ImageSource, indices: Sequence[int], position: int) -> tuple[Any, int, int]:
    """Load ``indices[position]`` or, if it is unreadable, the next readable one of ``indices`` (cyclically).

    Returns (what ``source.load`` gives, the source index used, the first unreadable source index or -1); when
    none of ``indices`` is readable, a one-line error naming the first.
    """
    for offset in range(len(indices)):
        i = indices[(position + offset) % len(indices)]
        try:
            return source.load(i), i, indices[position] if offset else -1
        except UnreadableImage:
            pass
    if not len(indices):
        raise MimzooError("a split of the data holds no images; check --data (and --val-fraction)")
    example = unreadable_name(source, indices[position])
    raise MimzooError(f"{none_readable(len(indices), example)}; point --data at image files PIL can open")


def unreadable_name(source: ImageSource, index: int) -> str:
    """``source.describe(index)`` and why it does not decode (read again: only to report it, once)."""
    try:
        source.load(index)
    except UnreadableImage as exc:
        return f"{source.describe(index)} ({exc})"
    return source.describe(index)


class SkippedImages:
    """Counts the unreadable images that batches report (the ``bad`` of :func:`load_readable`) and warns once per
    image: ``warning: skipped N unreadable images: NAME (why), ...``."""

    def __init__(self, source: ImageSource, warn: Callable[[str], None], shown: int = 3) -> None:
        self.source, self.warn, self.shown, self.seen = source, warn, shown, set()

    def count(self, bad: torch.Tensor) -> int:
        """The number of substituted samples in the batch; the images not reported before are warned about."""
        bad = bad[bad >= 0].tolist()
        new = [i for i in dict.fromkeys(bad) if i not in self.seen]
        if new:
            self.seen.update(new)
            names = ", ".join(unreadable_name(self.source, i) for i in new[: self.shown])
            more = f" and {len(new) - self.shown} more" if len(new) > self.shown else ""
            self.warn(f"warning: skipped {counted(len(new), 'unreadable image')}: {names}{more}")
        return len(bad)


class SkipReportingLoader:
    """A loader of batches whose last element is ``bad``: yields the batches without it and reports the skipped
    images through :class:`SkippedImages` (the training loops see plain (images, targets) batches)."""

    def __init__(self, loader: DataLoader, source: ImageSource, warn: Callable[[str], None]) -> None:
        self.loader, self.skipped = loader, SkippedImages(source, warn)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple]:
        for *batch, bad in self.loader:
            self.skipped.count(bad)
            yield tuple(batch)


class ResumableSampler(DistributedSampler):
    """DistributedSampler (also for one process) that can start an epoch part-way, after a resume; it yields
    (epoch, index) keys for :class:`ViewDataset`."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        return iter([(self.epoch, index) for index in list(super().__iter__())[self.skip :]])

    def __len__(self) -> int:
        return self.num_samples - self.skip


def worker_stops_quietly(worker_id: int) -> None:
    """A loader's ``worker_init_fn``: on SIGTERM (a scheduler's stop, ``timeout``, sent to the whole process group;
    or the loader's own shutdown) a worker ends at once with status 0, leaving the report to the main process, which
    stops cleanly; killed by the signal, workers would end the run with a worker-killed traceback. The temp folder
    the worker made (pymp-*: torch shares tensors through a socket there) goes with it, as at a normal exit, whose
    finalizers an immediate exit skips (running them could block on a queue the main process no longer reads)."""
    inherited = _multiprocessing_temp_dir()  # a forked worker starts with its parent's, which is not its to remove

    def stop(*_) -> None:
        own = _multiprocessing_temp_dir()
        if own is not None and own != inherited:
            shutil.rmtree(own, ignore_errors=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)


def _multiprocessing_temp_dir() -> str | None:
    return multiprocessing.current_process()._config.get("tempdir")  # where multiprocessing.util.get_temp_dir keeps it


def make_loader(dataset: Dataset, sampler: ResumableSampler, batch_size: int, workers: int,
                pin_memory: bool, collate_fn: Callable | None = None) -> DataLoader:
    # A private generator keeps worker seeding off the global RNG, whose state the checkpoint restores;
    # workers persist across epochs (the sampler's keys carry the epoch).
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True,
                      pin_memory=pin_memory, generator=torch.Generator(), persistent_workers=workers > 0,
                      collate_fn=collate_fn, worker_init_fn=worker_stops_quietly)


@device_constant
def imagenet_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std as (1, 3, 1, 1) tensors on ``device``, made once: no host-to-device copy per step."""
    shape = (1, 3, 1, 1)
    return torch.tensor(IMAGENET_MEAN, device=device).view(shape), torch.tensor(IMAGENET_STD, device=device).view(shape)


def normalize(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 on ``device``, ImageNet mean/std normalised."""
    mean, std = imagenet_stats(device)
    return (images.to(device, non_blocking=True).float() / 255 - mean) / std
