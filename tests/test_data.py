import os

import numpy as np
import pytest
import torch

from conftest import run_python
from mimzoo.data.loader import ResumableSampler, ViewDataset, make_loader
from mimzoo.data.sources import ImageFolderSource, NpzPackSource, open_source
from mimzoo.data.transforms import RandomResizedCropFlip, rrc_box
from mimzoo.errors import MimzooError


def test_folder_with_class_subfolders_has_labels(image_folder):
    source = open_source(str(image_folder))
    assert isinstance(source, ImageFolderSource) and len(source) == 48
    assert len(source.classes) >= 2 and source.labels.min() == 0
    assert source.load(0).mode == "RGB"


def test_flat_folder_has_no_labels(tmp_path, image_folder):
    for i, path in enumerate(sorted(image_folder.rglob("*.png"))[:3]):
        (tmp_path / f"{i}.PNG").write_bytes(path.read_bytes())
    source = open_source(str(tmp_path))
    assert len(source) == 3 and source.classes == [] and np.all(source.labels == -1)


def test_npz_pack_and_split_spec(npz_pack):
    source = open_source(str(npz_pack))
    assert isinstance(source, NpzPackSource) and len(source) == 40
    assert source.load(3).size == (32, 32)
    with pytest.raises(MimzooError, match="no split 'val'.*splits in the pack: train"):
        open_source(f"{npz_pack}:val")


def test_builtin_sample():
    assert len(open_source("builtin")) == 2000
    assert len(open_source("builtin:test")) == 500
    with pytest.raises(MimzooError, match=r"^builtin has no split 'foo' .*splits in the pack: test, train; use --data "
                                          r"builtin:SPLIT$"):
        open_source("builtin:foo")  # named as the user named it, not by its path inside the package


@pytest.mark.parametrize("spec", ["builtin:", "{pack}:"])
def test_a_colon_without_a_split(npz_pack, spec):
    with pytest.raises(MimzooError, match="names no split after the ':'"):
        open_source(spec.format(pack=npz_pack))


@pytest.mark.parametrize("make,message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: p, "no images found"),
    (lambda p: (p / "x.txt").write_text("hi") and p / "x.txt", "neither a folder nor an .npz"),
])
def test_bad_data_specs(tmp_path, make, message):
    with pytest.raises(MimzooError, match=message):
        open_source(str(make(tmp_path)))


def test_rrc_box_stays_inside_and_covers_the_scale_range():
    gen = torch.Generator().manual_seed(0)
    areas = []
    for _ in range(200):
        left, top, w, h = rrc_box(50, 40, (0.2, 1.0), (3 / 4, 4 / 3), gen)
        assert 0 <= left and left + w <= 50 and 0 <= top and top + h <= 40
        areas.append(w * h / 2000)
    assert min(areas) < 0.3 and max(areas) > 0.8


def test_views_depend_only_on_seed_epoch_index(image_folder):
    ds = ViewDataset(open_source(str(image_folder)), RandomResizedCropFlip(32), seed=3)
    first, _ = ds[0, 5]
    assert first.dtype == torch.uint8 and first.shape == (3, 32, 32)
    assert torch.equal(ds[0, 5][0], first)
    assert not torch.equal(ds[1, 5][0], first)


def test_loader_batches_do_not_depend_on_worker_count(image_folder):
    ds = ViewDataset(open_source(str(image_folder)), RandomResizedCropFlip(32), seed=0)

    def epochs(workers):
        """Two epochs from one loader (its workers persist): the second must see the second epoch's views."""
        sampler = ResumableSampler(ds, 1, 0, seed=0)
        loader = make_loader(ds, sampler, 8, workers, pin_memory=False)
        batches = []
        for epoch in (2, 3):
            sampler.set_epoch(epoch)
            batches.append([b[0] for b in loader])
        return batches

    (a2, a3), (b2, b3) = epochs(0), epochs(2)
    assert all(torch.equal(a, b) for a, b in zip(a2 + a3, b2 + b3, strict=True))
    assert not torch.equal(a2[0], a3[0])


def test_sampler_skip_resumes_mid_epoch(image_folder):
    ds = ViewDataset(open_source(str(image_folder)), RandomResizedCropFlip(32), seed=0)
    sampler = ResumableSampler(ds, 1, 0, seed=0)
    sampler.set_epoch(1)
    full = list(sampler)
    assert {epoch for epoch, _ in full} == {1}
    sampler.set_epoch(1, skip=16)
    assert list(sampler) == full[16:] and len(sampler) == len(full) - 16


def test_corrupt_images_are_skipped_and_reported(tmp_path, image_folder):
    for i, path in enumerate(sorted(image_folder.rglob("*.png"))[:4]):
        (tmp_path / f"{i}.png").write_bytes(path.read_bytes())
    (tmp_path / "1.png").write_bytes(b"not an image")
    (tmp_path / "2.png").write_bytes((tmp_path / "0.png").read_bytes()[:60])  # truncated
    ds = ViewDataset(open_source(str(tmp_path)), RandomResizedCropFlip(32), seed=0)
    results = [ds[0, i] for i in range(4)]
    assert [bad for _, bad in results] == [-1, 1, 2, -1]
    assert all(view.shape == (3, 32, 32) for view, _ in results)


STOPPED_WORKERS = """
import os, signal, torch
from multiprocessing.util import get_temp_dir
from torch.utils.data import DataLoader
from mimzoo.data.loader import worker_stops_quietly
parents = get_temp_dir()  # made before the fork: the workers inherit it, and must leave it
loader = DataLoader(torch.arange(64.0).view(16, 4), batch_size=4, num_workers=2, persistent_workers=True,
                    worker_init_fn=worker_stops_quietly)
batches = iter(loader)
next(batches), next(batches)  # each worker has sent a tensor through shared memory
for worker in batches._workers:
    os.kill(worker.pid, signal.SIGTERM)  # as a scheduler's stop reaches the whole process group
    worker.join(10)
print([worker.exitcode for worker in batches._workers], os.path.isdir(parents))
"""


def test_workers_stopped_by_sigterm_leave_no_temp_folder(tmp_path):
    """Each loader worker that sends a tensor makes a temp folder (pymp-*, torch's file-descriptor sharing) that a
    normal exit removes; the quiet SIGTERM exit removes it too, and leaves its parent's alone."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    done = run_python(STOPPED_WORKERS, env={**os.environ, "TMPDIR": str(temp)})
    assert done.returncode == 0 and done.stdout.strip() == "[0, 0] True", done.stderr
    assert sorted(p.name for p in temp.iterdir()) == []  # the parent's went at its normal exit
