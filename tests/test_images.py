"""Images decode one way in every command: EXIF orientation, 16-bit PNGs, colour modes, decompression bombs,
extreme aspect ratios, exact masks; unreadable files are skipped, counted and named (pretrain views, labelled
splits, segmentation, visualize), and a split with no readable image stops with one line."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_segment import write_generic
from timm.data import create_transform

from conftest import save_bomb
from mimzoo.data.images import MAX_ASPECT, MAX_PIXELS
from mimzoo.data.labeled import LabeledDataset, Split
from mimzoo.data.loader import SkippedImages, ViewDataset
from mimzoo.data.segmentation import SegDataset, check_split, open_segmentation
from mimzoo.data.sources import open_source
from mimzoo.data.transforms import RandomResizedCropFlip, SimpleResizedCropFlip
from mimzoo.engine.distributed import DistContext
from mimzoo.engine.report import Reporter
from mimzoo.engine.supervised import LoopConfig, SupervisedLoop
from mimzoo.errors import MimzooError
from mimzoo.viz import load_views
from mimzoo.viz.grid import DEMO_PHOTOS

PHOTO = DEMO_PHOTOS / "coffee.jpg"  # 384 x 256


class Recorder(Reporter):
    def __init__(self) -> None:
        self.messages: list[str] = []

    def message(self, text: str) -> None:
        self.messages.append(text)


def photo(size: tuple[int, int] | None = None) -> Image.Image:
    with Image.open(PHOTO) as img:
        return img.convert("RGB").resize(size, Image.BICUBIC) if size else img.convert("RGB")


def save_16_bit(path: Path, grey: Image.Image) -> Path:
    """The photo's 8-bit grey values v stored as 16-bit v * 257 (65535 = white): PIL mode I;16."""
    Image.fromarray(np.asarray(grey).astype(np.uint16) * 257).save(path)
    return path


def save_rotated(path: Path, img: Image.Image, orientation: int = 6) -> Path:
    """A JPEG stored sideways whose EXIF says how to turn it upright (6: rotate 90 degrees clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, exif=exif, quality=95)
    return path


def test_16_bit_png_reads_like_its_8_bit_copy(tmp_path):
    grey = photo().convert("L")
    (tmp_path / "data").mkdir()
    save_16_bit(tmp_path / "data" / "grey16.png", grey)
    with Image.open(tmp_path / "data" / "grey16.png") as raw:
        assert raw.mode == "I;16"
    loaded = np.asarray(open_source(str(tmp_path / "data")).load(0))
    assert np.array_equal(loaded, np.asarray(grey.convert("RGB")))  # was clipped: almost white


def test_exif_orientation_is_applied(tmp_path):
    (tmp_path / "data").mkdir()
    path = save_rotated(tmp_path / "data" / "sideways.jpg", photo())
    with Image.open(path) as raw:
        upright = raw.convert("RGB").transpose(Image.ROTATE_270)
    loaded = open_source(str(tmp_path / "data")).load(0)
    assert loaded.size == (256, 384) and np.array_equal(np.asarray(loaded), np.asarray(upright))


def test_every_colour_mode_becomes_rgb(tmp_path):
    img = photo((48, 32))
    palette = img.convert("P")
    palette.info["transparency"] = 0
    files = {"p.png": palette, "la.png": img.convert("LA"), "rgba.png": img.convert("RGBA"),
             "l.png": img.convert("L"), "one.png": img.convert("1"), "cmyk.jpg": img.convert("CMYK")}
    (tmp_path / "data").mkdir()
    for name, variant in files.items():
        variant.save(tmp_path / "data" / name)
    source = open_source(str(tmp_path / "data"))
    for i in range(len(source)):
        loaded = source.load(i)
        with Image.open(source.paths[i]) as raw:  # PIL's own conversion; alpha is dropped as torchvision does
            assert loaded.mode == "RGB" and loaded.size == (48, 32)
            assert np.array_equal(np.asarray(loaded), np.asarray(raw.convert("RGB"))), source.paths[i].name


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bombs_are_skipped_named_and_counted(tmp_path, image_folder):
    data = tmp_path / "data"
    data.mkdir()
    for i, path in enumerate(sorted(image_folder.rglob("*.png"))[:3]):
        shutil.copy(path, data / f"{i}.png")
    save_bomb(data / "1a-bomb.png", 30000)  # over twice PIL's limit: PIL raises DecompressionBombError
    save_bomb(data / "2a-big.png", 10000)  # over PIL's limit (a warning in PIL), over mimzoo's per-image limit
    source = open_source(str(data))
    dataset = ViewDataset(source, RandomResizedCropFlip(32), seed=0)
    results = [dataset[0, i] for i in range(len(source))]
    assert [bad for _, bad in results] == [-1, -1, 2, -1, 4]
    assert all(view.shape == (3, 32, 32) for view, _ in results)
    warnings = []
    skipped = SkippedImages(source, warnings.append)
    assert skipped.count(torch.tensor([bad for _, bad in results])) == 2
    assert len(warnings) == 1 and warnings[0].startswith("warning: skipped 2 unreadable images: ")
    assert "1a-bomb.png (" in warnings[0] and f"over the limit of {MAX_PIXELS:,}" in warnings[0]
    assert skipped.count(torch.tensor([2, -1])) == 1 and len(warnings) == 1  # each image is named once
    assert Image.MAX_IMAGE_PIXELS is not None  # PIL's own safety stays on


def test_extreme_aspect_ratios_cost_bounded_resizes(tmp_path, monkeypatch):
    """A 4000 x 1 strip: the SRC view (resize the short side, then crop) and timm's evaluation resize would
    upscale it to 4000 x 32 times its height; the decoder first centre-crops it to MAX_ASPECT : 1."""
    for name, size in (("a/strip.png", (4000, 1)), ("b/column.png", (1, 4000)), ("c/ok.png", (160, 10))):
        (tmp_path / "data" / name).parent.mkdir(parents=True)
        photo(size).save(tmp_path / "data" / name)
    biggest = 2 * MAX_ASPECT * 37 * 37  # a resize of the short side to at most 37 px, the long side capped
    resize = Image.Image.resize

    def bounded_resize(self, size, *args, **kwargs):
        assert size[0] * size[1] <= biggest, f"resize of {self.size} to {size}"
        return resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", bounded_resize)
    source = open_source(str(tmp_path / "data"))
    for view in (SimpleResizedCropFlip(32), RandomResizedCropFlip(32)):
        assert all(ViewDataset(source, view, seed=0)[0, i][0].shape == (3, 32, 32) for i in range(3))
    evaluation = create_transform(input_size=32, crop_pct=0.875, is_training=False)  # resize 36, crop 32
    labeled = LabeledDataset(Split(source, np.arange(3)), evaluation)
    assert all(labeled[i][0].shape == (3, 32, 32) for i in range(3))
    assert [source.load(i).size for i in range(3)] == [(MAX_ASPECT, 1), (1, MAX_ASPECT), (160, 10)]


def test_masks_are_read_exactly_or_stop_naming_the_file(tmp_path):
    root = write_generic(tmp_path / "seg", splits=(("train", 3), ("val", 1)))
    masks = root / "train" / "masks"
    with Image.open(masks / "0.png") as mask:
        labels = np.asarray(mask)
    Image.fromarray(labels.astype(np.uint16)).save(masks / "0.png")  # 16-bit greyscale label map
    palette = Image.fromarray(labels).convert("P")
    palette.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    palette.save(masks / "1.png")
    data = open_segmentation(str(root))
    assert np.array_equal(data.train.mask(0), labels) and np.array_equal(data.train.mask(1), labels)
    check_split(data.train, 3, 255, "train")
    Image.fromarray(np.stack([labels] * 3, axis=-1)).save(masks / "2.png")  # an RGB "mask"
    with pytest.raises(MimzooError, match=rf"mask {re.escape(str(masks / '2.png'))}: it is a RGB image .* "
                                          "single-channel label map"):
        check_split(open_segmentation(str(root)).train, 3, 255, "train")
    (masks / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(MimzooError, match=rf"mask {re.escape(str(masks / '2.png'))}: "):
        check_split(open_segmentation(str(root)).train, 3, 255, "train")


def test_segmentation_skips_unreadable_images_and_orients_them(tmp_path):
    root = write_generic(tmp_path / "seg", splits=(("train", 4), ("val", 1)))
    images = root / "train" / "images"
    (images / "1.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    save_bomb(images / "2.png", 30000)
    (images / "2.jpg").unlink()
    with Image.open(images / "3.jpg") as img, Image.open(root / "train" / "masks" / "3.png") as mask:
        sideways = img.convert("RGB").resize((32, 48))  # stored 32 wide, 48 high; upright 48 wide, 32 high
        upright_mask = mask.resize((48, 32), Image.NEAREST)
    save_rotated(images / "3.jpg", sideways)
    upright_mask.save(root / "train" / "masks" / "3.png")
    data = open_segmentation(str(root))
    check_split(data.train, 3, 255, "train")  # the rotated image fits its mask; unreadable images are not fatal
    dataset = SegDataset(data.train, (0.5,) * 3, (0.5,) * 3, 255, 32)
    assert [dataset[i][2] for i in range(4)] == [-1, 1, 2, -1]
    assert dataset[3][0].shape == (3, 32, 64)  # upright 32 x 48, padded to a multiple of 32
    warnings = []
    SkippedImages(dataset.source, warnings.append).count(torch.tensor([1, 2]))
    assert str(images / "1.jpg") in warnings[0] and str(images / "2.png") in warnings[0]
    for path in images.iterdir():
        path.write_bytes(b"broken")
    with pytest.raises(MimzooError, match="none of the 4 images is readable, e.g. .*0.jpg"):
        SegDataset(open_segmentation(str(root)).train, (0.5,) * 3, (0.5,) * 3, 255, 32)


def test_labeled_splits_report_skipped_images_and_stop_when_none_is_readable(tmp_path, image_folder):
    data = tmp_path / "data"
    for i, path in enumerate(sorted(image_folder.rglob("*.png"))[:8]):
        (data / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, data / f"class{i % 2}" / f"{i}.png")
    (data / "class0" / "0.png").write_bytes(b"not a PNG")
    source = open_source(str(data))
    transform = create_transform(input_size=32, is_training=False)
    dataset = LabeledDataset(Split(source, np.arange(len(source))), transform)
    reporter = Recorder()
    loop = SupervisedLoop(torch.nn.Identity(), torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1),
                          dataset, dataset, torch.nn.CrossEntropyLoss(),
                          LoopConfig(1, 0, 4, 0.1, 0.0, 0, tmp_path / "out"), DistContext(0, 1, 0, torch.device("cpu")),
                          reporter, {})
    for loader in (loop.train_loader, loop.train_loader, loop.val_loader):  # two training epochs
        assert all(len(batch) == 2 for batch in loader)
    assert len(reporter.messages) == 2  # named once by each loader, not once per epoch
    assert reporter.messages[0] == reporter.messages[1]
    assert reporter.messages[0].startswith(f"warning: skipped 1 unreadable image: {data / 'class0' / '0.png'} (")
    for path in data.rglob("*.png"):
        path.write_bytes(b"")
    with pytest.raises(MimzooError, match="none of the 8 images is readable"):
        LabeledDataset(Split(source, np.arange(len(source))), transform)


def test_visualize_skips_unreadable_images_and_reads_16_bit(tmp_path):
    grey = photo((48, 32)).convert("L")
    grey.save(tmp_path / "grey8.png")
    save_16_bit(tmp_path / "grey16.png", grey)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    reporter = Recorder()
    views = load_views([tmp_path / "grey16.png", tmp_path / "broken.jpg", tmp_path / "grey8.png"], 32, reporter)
    assert views.shape == (2, 3, 32, 32) and torch.equal(views[0], views[1])
    assert len(reporter.messages) == 1 and "skipped 1 unreadable image: " in reporter.messages[0]
    assert str(tmp_path / "broken.jpg") in reporter.messages[0]
    with pytest.raises(MimzooError, match="the image .* is not readable"):
        load_views([tmp_path / "broken.jpg"], 32)
