"""Segmentation with smp DPT: data layouts and checks, metrics, strict backbone load, a short training run."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from mimzoo.data.segmentation import SegDataset, check_split, open_segmentation
from mimzoo.engine.distributed import DistContext
from mimzoo.engine.report import SilentReporter
from mimzoo.engine.seg_metrics import SegMeter
from mimzoo.engine.segment import (
    PREVIEW_MIN_COLUMN,
    PREVIEW_PAD,
    SegmentConfig,
    build_dpt,
    decoder_channels,
    input_multiple,
    palette,
    segment,
)
from mimzoo.errors import MimzooError
from mimzoo.viz.draw import line_height

CPU = DistContext(0, 1, 0, torch.device("cpu"))
CAMVID_PACK = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid_180x240_jpeg95.npz"


def scene(seed: int, height: int = 32, width: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Sky (0) over road (1), with a car (2) box; a 2-px unlabelled (255) border."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.uint8)
    horizon = rng.integers(height // 3, 2 * height // 3)
    mask[horizon:] = 1
    top, left = rng.integers(horizon, height - 8), rng.integers(0, width - 16)
    mask[top : top + 8, left : left + 16] = 2
    colours = np.array([[90, 140, 230], [80, 80, 80], [200, 30, 30]], np.uint8)
    image = colours[mask] + rng.integers(0, 20, (height, width, 3)).astype(np.uint8)
    mask[:2], mask[-2:] = 255, 255
    return image, mask


def write_generic(root: Path, splits=(("train", 8), ("val", 3)), size=(32, 32)) -> Path:
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("sky\nroad\ncar\n")
    for split, count in splits:
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, mask = scene(hash((split, i)) % 1000, *size)
            Image.fromarray(image).save(root / split / "images" / f"{i}.jpg")
            Image.fromarray(mask).save(root / split / "masks" / f"{i}.png")
    return root


def tiny_backbone():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=4)


def test_miou_matches_a_hand_computed_example():
    meter = SegMeter(num_classes=3, ignore_index=255)
    prediction = torch.tensor([[[0, 0, 1, 1], [0, 1, 1, 0]]])
    target = torch.tensor([[[0, 0, 1, 255], [1, 1, 1, 0]]])
    meter.update(prediction, target)
    result = meter.compute()
    # class 0: tp 3, fp 1 -> 3/4; class 1: tp 3, fn 1 -> 3/4; class 2 absent everywhere -> no IoU, not averaged;
    # the ignored pixel (predicted 1) counts nowhere: 6 of 7 labelled pixels are right
    assert result["iou_per_class"] == [75.0, 75.0, None]
    assert result["miou"] == pytest.approx(75.0)
    assert result["pixel_accuracy"] == pytest.approx(600 / 7)


def test_encoder_holds_the_backbone_weights():
    backbone = tiny_backbone()
    model = build_dpt(backbone, num_classes=3)
    assert torch.equal(model.encoder.model.blocks[1].attn.qkv.weight, backbone.blocks[1].attn.qkv.weight)
    assert torch.equal(model.encoder.model.pos_embed, backbone.pos_embed)


def test_generic_layout_and_padded_evaluation(tmp_path):
    data = open_segmentation(str(write_generic(tmp_path / "seg", size=(40, 48))))
    assert data.classes == ["sky", "road", "car"] and len(data.train) == 8 and len(data.val) == 3
    multiple = input_multiple(tiny_backbone())
    assert multiple == 32
    image, mask, _ = SegDataset(data.val, (0.5,) * 3, (0.5,) * 3, 255, multiple)[0]
    assert image.shape == (3, 64, 64) and mask.shape == (64, 64)
    assert torch.all(mask[40:] == 255) and torch.all(mask[:, 48:] == 255)  # padding is ignored
    image, mask, _ = SegDataset(data.train, (0.5,) * 3, (0.5,) * 3, 255, multiple, crop=32)[0]
    assert image.shape == (3, 32, 32) and mask.shape == (32, 32)


def test_bad_masks_give_one_clear_line(tmp_path):
    root = write_generic(tmp_path / "seg", splits=(("train", 2), ("val", 1)))
    Image.fromarray(np.full((24, 32), 1, np.uint8)).save(root / "train" / "masks" / "1.png")
    data = open_segmentation(str(root))
    with pytest.raises(MimzooError, match=r"train 1: mask size \(24, 32\) differs from image size \(32, 32\)"):
        check_split(data.train, 3, 255, "train")
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(root / "train" / "masks" / "1.png")
    with pytest.raises(MimzooError, match="label 7 is not below the 3 classes"):
        check_split(open_segmentation(str(root)).train, 3, 255, "train")
    with pytest.raises(MimzooError, match="not a segmentation dataset"):
        open_segmentation(str(tmp_path))


def write_pack(path: Path, splits=(("train", 3), ("val", 2)), size=(32, 32)) -> Path:
    """A segmentation pack in ../shared/data's CamVid format: SPLIT_jpeg / SPLIT_offsets / SPLIT_y, and the class
    names with 'unlabelled' last (the ignore label)."""
    arrays = {"classes": np.array(["sky", "road", "car", "unlabelled"])}
    for split, count in splits:
        blobs, masks = [], []
        for i in range(count):
            image, mask = scene(i, *size)
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, format="JPEG", quality=95)
            blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
            masks.append(np.where(mask == 255, 3, mask))
        arrays[f"{split}_jpeg"] = np.concatenate(blobs)
        arrays[f"{split}_offsets"] = np.cumsum([0] + [len(b) for b in blobs])
        arrays[f"{split}_y"] = np.stack(masks)
    np.savez(path, **arrays)
    return path


def test_npz_pack_layout(tmp_path):
    data = open_segmentation(str(write_pack(tmp_path / "pack.npz")))
    assert data.classes == ["sky", "road", "car"] and data.void_label == 3  # 'unlabelled' is the ignore label
    check_split(data.train, 3, 3, "train")
    assert data.val.image(1).shape == (32, 32, 3)


@pytest.mark.skipif(not CAMVID_PACK.exists(), reason="../shared/data is not beside the checkout")
def test_real_camvid_pack_reads():
    data = open_segmentation(str(CAMVID_PACK), eval_split="test")
    assert len(data.classes) == 11 and len(data.train) == 367 and len(data.val) == 233 and data.void_label == 11
    check_split(data.train, 11, data.void_label, "train")
    assert data.train.image(0).shape == (180, 240, 3) and data.train.mask(0).shape == (180, 240)


def test_short_training_run_end_to_end(tmp_path):
    from huggingface_hub import ModelCard

    data = open_segmentation(str(write_generic(tmp_path / "seg")))
    cfg = SegmentConfig(epochs=2, warmup_epochs=1, batch_size=4, crop_size=32, workers=0, out=str(tmp_path / "out"),
                        blr=0.064, previews=2)  # lr 1e-3 at batch 4
    backbone = tiny_backbone()
    backbone.pretrained_cfg = {**backbone.pretrained_cfg, "license": "cc-by-nc-4.0", "mean": (0.485, 0.456, 0.406)}
    results = segment(backbone, data, cfg, CPU, SilentReporter(), "local-dir:exports/tiny", "cifar10-sample")
    assert 0 <= results["miou"] <= 100 and len(results["iou_per_class"]) == 3
    assert results["split"] == "val" and results["epoch"] == 2 and not any(k.startswith("best") for k in results)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["history"][-1]["miou"] == results["miou"] and saved["history"][-1]["split"] == "val"
    assert saved["config"]["lr"] == pytest.approx(1e-3)
    with Image.open(tmp_path / "out" / "predictions.png") as preview:
        preview = preview.convert("RGB")
    assert preview.width == 3 * (PREVIEW_MIN_COLUMN + PREVIEW_PAD) + PREVIEW_PAD  # 32-px images, titled columns
    titles = preview.crop((0, 0, preview.width, PREVIEW_PAD + line_height()))
    assert min(titles.convert("L").get_flattened_data()) < 100  # column titles are written over the panels
    legend = set(preview.crop((0, preview.height - line_height() - PREVIEW_PAD, preview.width,
                               preview.height)).get_flattened_data())
    assert {tuple(int(v) for v in c) for c in palette(3)} <= legend  # a swatch per class (black: ignored)
    import segmentation_models_pytorch as smp

    reloaded = smp.from_pretrained(tmp_path / "out" / "model")
    assert isinstance(reloaded, smp.DPT)
    # smp's own card said license mit and dataset "val"; the weights derive from the backbone, so its licence holds
    card = ModelCard.load(tmp_path / "out" / "model" / "README.md")
    assert card.data.license == "cc-by-nc-4.0" and card.data.library_name == "segmentation-models-pytorch"
    assert card.data.datasets == ["uoft-cs/cifar10"]
    (row,) = card.data.eval_results
    assert (row.task_type, row.metric_type, row.dataset_split, row.metric_value) == (
        "image-segmentation", "mean_iou", "val", round(results["miou"], 2))
    for text in ("0 sky, 1 road, 2 car", "mean [0.485, 0.456, 0.406]", "local-dir:exports/tiny", "multiples of 32"):
        assert text in card.text, text


def test_the_dpt_decoder_follows_the_encoder_width():
    model = build_dpt(tiny_backbone(), num_classes=3)
    params = sum(p.numel() for p in model.parameters())
    encoder = sum(p.numel() for p in model.encoder.parameters())
    assert params < 3 * encoder  # smp's default (ViT-L's decoder) made a 5.5M ViT-T a 35M model
    assert decoder_channels(768) == ((96, 192, 384, 768), 256)  # DPT-Base's, as in the paper
