"""--data-device gpu, run on the CPU: the same plans as the PIL path, views equal to it up to a stated bound,
worker-count independence, unreadable files, and an exactly resuming pretraining run."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import tiny_pretrain_args
from mimzoo.data import device_views as dv
from mimzoo.data.loader import ResumableSampler, ViewDataset, make_loader
from mimzoo.data.sources import open_source
from mimzoo.data.transforms import RandomResizedCropFlip, SimpleResizedCropFlip, to_uint8_tensor

CPU = torch.device("cpu")
VIEWS = [RandomResizedCropFlip(32), SimpleResizedCropFlip(32)]


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory, image_folder):
    """Photos of every kind the device path must route: baseline JPEG and PNG (from ``image_folder``), grey and
    CMYK JPEGs, an EXIF-rotated JPEG, one longer than MAX_ASPECT, and a JPEG whose scan data is garbage."""
    root = tmp_path_factory.mktemp("odd")
    photos = sorted(image_folder.rglob("*.*"))[:8]
    for path in photos:
        (root / path.name).write_bytes(path.read_bytes())
    photo = Image.open(photos[0]).convert("RGB").resize((48, 40))
    photo.convert("L").save(root / "grey.jpg")
    photo.convert("CMYK").save(root / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    photo.save(root / "rotated.jpg", exif=exif)
    photo.save(root / "plain.jpg")
    photo.resize((360, 20)).save(root / "long.jpg")
    data = (root / "plain.jpg").read_bytes()
    scan = data.index(b"\xff\xda") + 10  # what PIL reads of the header stays intact, the scan is garbage
    (root / "garbage.jpg").write_bytes(data[:scan] + b"\xff\x00" * 10 + b"\xff\xd9")
    return root


def planned(spec, view, seed=0):
    return dv.device_views(open_source(str(spec)), view, seed, CPU)


@pytest.mark.parametrize("view", VIEWS, ids=["rrc", "src"])
def test_plans_are_the_pil_paths_draws(odd_folder, view):
    """The workers see each image at the size PIL decodes it to (EXIF-rotated, aspect-capped) and draw the same
    box and flip from the same seed."""
    source = open_source(str(odd_folder))
    dataset, _ = planned(odd_folder, view, seed=5)
    for index in range(len(source)):
        try:
            img = source.load(index)
        except Exception:  # the garbage file: substituted in both paths
            continue
        gen = torch.Generator().manual_seed(dv.view_seed(5, 1, index))
        plan = view.plan(img.width, img.height, gen)
        row = dataset[1, index][1]
        assert row[dv.AXES].tolist() == [*plan.y, *plan.x] and bool(row[dv.FLIP]) == plan.flip
        assert row[dv.REGION].tolist()[1::2] == [img.height, img.width]


@pytest.mark.parametrize("view", VIEWS, ids=["rrc", "src"])
def test_views_equal_the_pil_path_within_one_level(odd_folder, view):
    """PIL's resampling coefficients and 8-bit rounding, batched: at most one level (of 255) off, where float32
    sums land on the other side of a rounding tie (bilinear: about 2% of the pixels, bicubic: under 0.01%)."""
    pil = ViewDataset(open_source(str(odd_folder)), view, seed=2)
    dataset, views = planned(odd_folder, view, seed=2)
    for epoch in range(3):
        out, bad = views(dv.collate([dataset[epoch, i] for i in range(len(dataset))]))
        ref = [pil[epoch, i] for i in range(len(dataset))]
        diff = (out.int() - torch.stack([v for v, _ in ref]).int()).abs()
        assert diff.max() <= 1 and diff.float().mean() < 0.05
        assert bad.tolist() == [b for _, b in ref] and bad.max() >= 0  # the garbage file, substituted as by PIL


def test_a_pack_of_one_size_stays_decoded_on_the_device(npz_pack):
    source = open_source(str(npz_pack))
    dataset, views = planned(npz_pack, RandomResizedCropFlip(32))
    assert views.resident.shape == (len(source), 3, 32, 32)
    assert torch.equal(views.resident[3], to_uint8_tensor(source.load(3)))
    pil = ViewDataset(source, RandomResizedCropFlip(32), seed=0)
    out, _ = views(dv.collate([dataset[4, i] for i in range(len(source))]))
    diff = (out.int() - torch.stack([pil[4, i][0] for i in range(len(source))]).int()).abs()
    assert diff.max() <= 1 and diff.float().mean() < 1e-3


def test_device_batches_do_not_depend_on_worker_count(image_folder):
    dataset, views = planned(image_folder, SimpleResizedCropFlip(32))

    def epoch(workers):
        sampler = ResumableSampler(dataset, 1, 0, seed=0)
        sampler.set_epoch(3)
        loader = make_loader(dataset, sampler, 8, workers, pin_memory=False, collate_fn=dv.collate)
        return [images for images, _ in dv.DeviceViewLoader(loader, views)]

    assert all(torch.equal(a, b) for a, b in zip(epoch(0), epoch(2), strict=True))


class Crash(Exception):
    pass


def test_pretrain_with_data_device_gpu_resumes_exactly(cli, image_folder, tmp_path, monkeypatch):
    args = ("--data-device", "gpu", "--batch-size", "16", "--ckpt-every", "1", "--seed", "3")  # 3 steps
    reference = tmp_path / "reference"
    assert cli(*tiny_pretrain_args(image_folder, reference, *args)).exit_code == 0

    from mimzoo.engine import pretrain

    save = pretrain._Trainer._save

    def save_then_crash(self):
        save(self)
        raise Crash

    monkeypatch.setattr(pretrain._Trainer, "_save", save_then_crash)
    crashed = tmp_path / "crashed"
    assert isinstance(cli(*tiny_pretrain_args(image_folder, crashed, *args)).exception, Crash)
    monkeypatch.setattr(pretrain._Trainer, "_save", save)
    result = cli(*tiny_pretrain_args(image_folder, crashed, *args), "--resume")
    assert result.exit_code == 0 and f"resumed {crashed} at step 1" in result.output
    a, b = load_file(crashed / "export" / "model.safetensors"), load_file(reference / "export" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_unknown_data_device_is_a_usage_error(cli, npz_pack, tmp_path):
    result = cli(*tiny_pretrain_args(npz_pack, tmp_path / "r", "--data-device", "tpu"))
    text = " ".join(result.output.replace("│", " ").split())  # rich wraps the message in a box
    assert result.exit_code == 2 and "'tpu' is not one of 'cpu', 'gpu'" in text  # a choice, listed in --help


def test_the_cuda_decoder_starts_only_after_the_queued_work(odd_folder, monkeypatch):
    """torchvision's CUDA decoder does not wait for the current stream (pytorch/vision#9606), so decode_payloads
    drains it first; on this CPU machine the stream and the decoder are stand-ins that record the order."""
    events, cpu_decoder = [], dv.decode_jpeg

    class Stream:
        def synchronize(self):
            events.append("synchronize")

    def decode(data, mode, device):
        events.append("decode")
        return [cpu_decoder(d, mode=mode) for d in data]

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    monkeypatch.setattr(dv, "decode_jpeg", decode)
    payloads = [dv.encode((odd_folder / "plain.jpg").read_bytes()).payload] * 2
    images = dv.decode_payloads(payloads, torch.device("cuda"))
    assert events == ["synchronize", "decode"]
    assert [tuple(image.shape) for image in images] == [(3, 40, 48)] * 2
