"""Downstream classification mechanics: linear probe, kNN, fine-tune (not accuracy)."""

import pytest
import timm
import torch

from mimzoo.data.labeled import open_labeled, stratified_split
from mimzoo.engine.distributed import DistContext
from mimzoo.engine.finetune import FinetuneConfig, build_classifier, finetune
from mimzoo.engine.knn import knn_predict, top1
from mimzoo.engine.linprobe import LinprobeConfig, linear_probe, make_optimizer
from mimzoo.engine.report import SilentReporter
from mimzoo.engine.supervised import LoopConfig, make_scheduler
from mimzoo.errors import MimzooError

CPU = DistContext(0, 1, 0, torch.device("cpu"))


def tiny_backbone(depth: int = 2):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=4, depth=depth)


@pytest.fixture(scope="module")
def splits(image_folder):
    return open_labeled(str(image_folder), val_fraction=0.25, seed=0)


def test_stratified_split_is_seeded_and_per_class():
    labels = torch.arange(3).repeat_interleave(20).numpy()
    train, val = stratified_split(labels, 0.25, seed=1)
    assert len(val) == 15 and sorted(labels[val].tolist()) == [0] * 5 + [1] * 5 + [2] * 5
    assert set(train) | set(val) == set(range(60)) and not set(train) & set(val)
    assert (stratified_split(labels, 0.25, seed=1)[1] == val).all()


def test_knn_separable_features_are_perfect_and_shuffled_labels_near_chance():
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(10, 64, generator=gen) * 5
    labels = torch.arange(10).repeat(100)
    bank = centers[labels] + torch.randn(1000, 64, generator=gen)
    queries = centers[labels[:500]] + torch.randn(500, 64, generator=gen)
    assert top1(knn_predict(bank, labels, queries, 10), labels[:500]) == 100.0
    shuffled = labels[torch.randperm(1000, generator=gen)]
    assert top1(knn_predict(bank, shuffled, queries, 10), labels[:500]) < 25.0


@pytest.mark.parametrize("mode", ["cached", "augmented"])
def test_linear_probe_trains_only_the_head(splits, tmp_path, mode):
    backbone = tiny_backbone()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    cfg = LinprobeConfig(mode=mode, epochs=2, warmup_epochs=1, batch_size=8, workers=0, out=str(tmp_path / mode))
    results = linear_probe(backbone, splits, cfg, CPU, SilentReporter())
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert len(results["history"]) == 2 and 0 <= results["top1"] <= 100
    # a folder of class subfolders alone: each epoch and the result are on the carve, and no epoch is chosen
    assert results["split"] == "val-carve" and results["top1"] == results["history"][-1]["top1"]
    assert "val" not in results and not any(k.startswith("best") for k in results)
    assert (tmp_path / mode / "results.json").exists()


def test_with_a_carve_the_test_split_is_measured_once_after_the_last_epoch(npz_with_test, tmp_path):
    # the cached probe here; the shared supervised loop (augmented probe, fine-tune) in test_downstream_cli
    mode = "cached"
    splits = open_labeled(str(npz_with_test), val_fraction=0.25, seed=0)
    assert (splits.val_name, splits.test_name, len(splits.test)) == ("val-carve", "test", 12)
    cfg = LinprobeConfig(mode=mode, epochs=2, warmup_epochs=0, batch_size=8, workers=0, out=str(tmp_path / mode))
    results = linear_probe(tiny_backbone(), splits, cfg, CPU, SilentReporter())
    assert [h["split"] for h in results["history"]] == ["val-carve"] * 2
    assert results["split"] == "test" and results["epoch"] == 2 and results["splits"]["test"]["images"] == 12
    assert results["splits"]["val"] == {"name": "val-carve", "images": len(splits.val), "carved_from": "train",
                                        "fraction": 0.25}
    val = results["val"]
    assert val["split"] == "val-carve" and val["last_top1"] == results["history"][-1]["top1"]
    assert val["best_top1"] == max(h["top1"] for h in results["history"]) and val["best_epoch"] in (1, 2)


@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_lars_steps_are_maes(weight_decay):
    # MAE's util/lars.py: for p.ndim > 1, d = g + wd w, d *= 0.001 ||w|| / ||d|| (1 if a norm is 0);
    # 1-D parameters: d = g. Then mu = 0.9 mu + d (mu starts at 0) and w -= lr mu.
    w = torch.nn.Parameter(torch.tensor([[3.0, 0.0], [0.0, 4.0]], dtype=torch.float64))
    zero = torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))
    b = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    lr = 2.0
    optimizer = make_optimizer(LinprobeConfig(weight_decay=weight_decay), [w, zero, b], lr)
    grads = [(torch.tensor([[0.0, 2.0], [0.0, 0.0]]), torch.ones(2, 2), torch.tensor([0.5, 0.25])),
             (torch.tensor([[1.0, 1.0], [-1.0, 0.0]]), torch.ones(2, 2), torch.tensor([-1.0, 1.0]))]
    expected = [t.detach().clone() for t in (w, zero, b)]
    momenta = [torch.zeros_like(t) for t in expected]
    for step_grads in grads:
        for param, grad in zip((w, zero, b), step_grads, strict=True):
            param.grad = grad.to(torch.float64)
        for i, grad in enumerate(step_grads):
            d = grad.to(torch.float64)
            if expected[i].ndim > 1:
                d = d + weight_decay * expected[i]
                w_norm, d_norm = expected[i].norm(), d.norm()
                d = d * (0.001 * w_norm / d_norm if w_norm > 0 and d_norm > 0 else 1.0)
            momenta[i] = 0.9 * momenta[i] + d
            expected[i] = expected[i] - lr * momenta[i]
        optimizer.step()
        for param, want in zip((w, zero, b), expected, strict=True):
            torch.testing.assert_close(param.detach(), want, rtol=1e-12, atol=1e-15)


def test_layer_decay_scales_follow_the_mae_formula():
    backbone, decay, depth = tiny_backbone(depth=4), 0.65, 4
    model = build_classifier(backbone, 10, FinetuneConfig(layer_decay=decay))
    from timm.optim import param_groups_layer_decay

    groups = param_groups_layer_decay(model, 0.05, model.no_weight_decay(), layer_decay=decay)
    optimizer = torch.optim.AdamW(groups, lr=1.0)
    make_scheduler(optimizer, LoopConfig(2, 0, 8, 1.0, 0.0, 0, None), 10).step_update(0)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    # MAE: embeddings are layer 0, block k is layer k + 1, head/fc_norm the top (depth + 1) with scale 1
    assert lr_of[id(names["patch_embed.proj.weight"])] == pytest.approx(decay ** (depth + 1))
    for k in range(depth):
        assert lr_of[id(names[f"blocks.{k}.mlp.fc1.weight"])] == pytest.approx(decay ** (depth - k))
    assert lr_of[id(names["head.weight"])] == pytest.approx(1.0)
    assert lr_of[id(names["fc_norm.weight"])] == pytest.approx(1.0)


def test_finetune_changes_the_encoder_and_resumes(splits, tmp_path):
    backbone = tiny_backbone()
    cfg = FinetuneConfig(epochs=1, warmup_epochs=0, batch_size=8, workers=0, out=str(tmp_path / "ft"), blr=1e-2)
    finetune(backbone, splits, cfg, CPU, SilentReporter())
    state = torch.load(tmp_path / "ft" / "checkpoint.pt", weights_only=True)
    tuned = state["model"]["blocks.0.attn.qkv.weight"]
    assert not torch.equal(tuned, backbone.state_dict()["blocks.0.attn.qkv.weight"])
    assert "fc_norm.weight" in state["model"] and state["epoch"] == 1
    cfg.epochs, cfg.resume = 2, True
    results = finetune(backbone, splits, cfg, CPU, SilentReporter())
    assert [h["epoch"] for h in results["history"]] == [1, 2]
    assert results["top1"] == results["history"][-1]["top1"] and results["epoch"] == 2


def test_backbone_that_does_not_fit_the_architecture():
    backbone = tiny_backbone()
    backbone.pretrained_cfg = {**backbone.pretrained_cfg, "architecture": "vit_small_patch16_224"}
    with pytest.raises(MimzooError, match="do not fit vit_small_patch16_224"):
        build_classifier(backbone, 10, FinetuneConfig())


def test_data_without_labels_or_validation(tmp_path, image_folder):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, path in enumerate(sorted(image_folder.rglob("*.png"))[:4]):
        (flat / f"{i}.png").write_bytes(path.read_bytes())
    with pytest.raises(MimzooError, match="no labels"):
        open_labeled(str(flat), val_fraction=0.5)
    with pytest.raises(MimzooError, match="no validation split"):
        open_labeled(str(image_folder))


def test_train_and_val_classes_must_match(tmp_path, image_folder):
    classes = sorted(p for p in image_folder.iterdir())
    for split, chosen in (("train", classes), ("val", classes[:1])):
        for folder in chosen:
            (tmp_path / split / folder.name).mkdir(parents=True)
            for img in list(folder.iterdir())[:2]:
                (tmp_path / split / folder.name / img.name).write_bytes(img.read_bytes())
    with pytest.raises(MimzooError, match="classes of the validation split"):
        open_labeled(str(tmp_path))
    assert len(open_labeled("builtin").classes) == 10


def test_default_randaugment_survives_its_strongest_magnitudes():
    # MAE's rand-m9-mstd0.5-inc1 reaches magnitude 10, where timm's posterize keeps 0 bits and Pillow 13 raises
    import random

    import numpy as np
    from PIL import Image
    from timm.data import create_transform

    transform = create_transform(32, is_training=True, auto_augment=FinetuneConfig().auto_augment)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    random.seed(0), np.random.seed(0)  # timm's RandAugment draws from both
    for _ in range(1500):
        transform(img)
