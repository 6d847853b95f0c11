"""``--limit N``: a short trial on N images (of each split, downstream; of ``--data``, pretraining), the same N every
time."""

from __future__ import annotations

import dataclasses

import numpy as np

from mimzoo.data.labeled import LabeledSplits, Split
from mimzoo.data.segmentation import SegData, SegSplit
from mimzoo.data.sources import ImageFolderSource, NpzPackSource
from mimzoo.errors import MimzooError


def subset_positions(count: int, limit: int | None, seed: int) -> np.ndarray:
    """Positions of ``limit`` of ``count`` items drawn by a seeded shuffle (all when ``limit`` is None or not
    smaller), in their original order."""
    if limit is not None and limit < 1:
        raise MimzooError(f"--limit must be at least 1 image per split, not {limit}")
    if limit is None or limit >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).permutation(count)[:limit])


def limit_labeled(splits: LabeledSplits, limit: int | None, seed: int) -> LabeledSplits:
    def cut(split: Split) -> Split:
        return Split(split.source, split.indices[subset_positions(len(split), limit, seed)])

    test = cut(splits.test) if splits.test is not None else None
    return dataclasses.replace(splits, train=cut(splits.train), val=cut(splits.val), test=test)


def limit_segmentation(data: SegData, limit: int | None, seed: int) -> SegData:
    def cut(split: SegSplit) -> SegSplit:
        return split if limit is None else split.subset(subset_positions(len(split), limit, seed))

    return dataclasses.replace(data, train=cut(data.train), val=cut(data.val))


def limit_source(source: ImageFolderSource | NpzPackSource, limit: int | None,
                 seed: int) -> ImageFolderSource | NpzPackSource:
    positions = subset_positions(len(source), limit, seed)
    return source if len(positions) == len(source) else source.subset(positions)
