"""The rules every command shares: the default warm-up, the data-loading workers, --limit's subset."""

import logging
import os

import numpy as np
import pytest
import torch

from mimzoo.data.labeled import open_labeled
from mimzoo.data.limit import limit_labeled, limit_source, subset_positions
from mimzoo.data.sources import open_source
from mimzoo.engine.defaults import default_workers, resolve_warmup
from mimzoo.engine.schedule import warmup_cosine
from mimzoo.errors import MimzooError


@pytest.mark.parametrize("given,recipe,epochs,expected", [
    (None, 40, 400, 40), (None, 40, 100, 25), (None, 40, 1, 0.25), (None, 10, 90, 10), (None, 2, 4, 1),
    (3, 40, 10, 3), (10, 40, 10, 10), (0, 40, 1, 0)])
def test_warmup_is_the_recipes_at_most_a_quarter_of_the_epochs(given, recipe, epochs, expected):
    assert resolve_warmup(given, recipe, epochs) == expected


@pytest.mark.parametrize("method, epochs, expected", [
    ("localmim", 100, 10), ("localmim", 50, 10), ("localmim", 200, 40), ("localmim", 20, 5),  # its README's rule
    ("mae", 100, 25), ("mae", 800, 40), ("pixmim", 100, 25)])
def test_pretrainings_recipe_warmup_is_the_methods(method, epochs, expected):
    from mimzoo.methods import get_method

    assert resolve_warmup(None, get_method(method).warmup_epochs(epochs), epochs) == expected


def test_a_warmup_longer_than_training_is_one_rule():
    with pytest.raises(MimzooError, match=r"--warmup-epochs 5 must be between 0 and --epochs \(1\)"):
        resolve_warmup(5, 40, 1)


@pytest.mark.parametrize("epochs,warmup,steps", [(1, 1, 4), (2, 1, 1), (1, 0, 1)])
def test_a_schedule_without_cosine_steps_follows_the_warmup_silently(caplog, epochs, warmup, steps):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with caplog.at_level(logging.WARNING):
        scheduler = warmup_cosine(optimizer, epochs, warmup, steps, 0.0)
    assert not caplog.records  # timm's "will have no effect" line
    lrs = []
    for step in range(epochs * steps):
        scheduler.step_update(step)
        lrs.append(optimizer.param_groups[0]["lr"])
    ramp = [i / (warmup * steps) for i in range(warmup * steps)]
    assert lrs == pytest.approx(ramp + [1.0] * (epochs * steps - len(ramp)))  # the warm-up, then the peak


def test_workers_follow_the_usable_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert default_workers() == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert default_workers() == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert default_workers() == 4


def test_limit_takes_the_same_seeded_subset_of_each_split():
    picked = subset_positions(100, 10, seed=0)
    assert len(picked) == 10 and list(picked) == sorted(picked) and (picked == subset_positions(100, 10, 0)).all()
    assert not (picked == subset_positions(100, 10, seed=1)).all()
    assert (subset_positions(5, 10, 0) == np.arange(5)).all() and (subset_positions(5, None, 0) == np.arange(5)).all()
    with pytest.raises(MimzooError, match="--limit must be at least 1"):
        subset_positions(5, 0, 0)
    splits = limit_labeled(open_labeled("builtin"), 50, seed=0)
    assert (len(splits.train), len(splits.val), splits.val_name) == (50, 50, "test")
    assert splits.train.source.split == "train" and len(set(splits.train.labels)) > 5


def test_pretrain_limit_keeps_the_same_images_of_a_pack_or_a_folder(npz_pack, image_folder):
    for source in (open_source(str(npz_pack)), open_source(str(image_folder))):
        part, picked = limit_source(source, 12, seed=3), subset_positions(len(source), 12, 3)
        assert type(part) is type(source) and len(part) == 12 and len(source) > 12
        for i, j in enumerate(picked):
            assert np.array_equal(np.asarray(part.load(i)), np.asarray(source.load(j)))
            assert part.labels[i] == source.labels[j]
        assert limit_source(source, len(source), 3) is source
