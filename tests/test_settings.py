"""Out-of-range settings stop every command before any work with one line naming the option and its valid range;
the library's config dataclasses check the same."""

from __future__ import annotations

import pytest
from test_pretrain_cli import error_line

from conftest import TINY_ARCH, tiny_pretrain_args
from mimzoo.engine.downstream import DownstreamInput, KnnConfig, run_knn
from mimzoo.engine.finetune import FinetuneConfig
from mimzoo.engine.linprobe import LinprobeConfig
from mimzoo.engine.segment import SegmentConfig
from mimzoo.errors import MimzooError

BACKBONE = f"random:{TINY_ARCH}"
QUICK = ["--workers", "0", "--device", "cpu", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "8"]

SETTINGS = [
    ("knn", ["--k", "0"], "--k must be at least 1, not 0"),
    ("knn", ["--temperature", "0"], "--temperature must be more than 0"),
    ("knn", ["--temperature", "-1"], "--temperature must be more than 0"),
    ("knn", ["--batch-size", "0"], "--batch-size must be at least 1"),
    ("linprobe", ["--epochs", "0"], "--epochs must be at least 1, not 0"),
    ("linprobe", ["--blr", "-0.1"], "--blr must be in (0, 10]"),
    ("linprobe", ["--blr", "1e9"], "--blr must be in (0, 10]"),
    ("linprobe", ["--blr", "nan"], "--blr must be in (0, 10]"),
    ("linprobe", ["--batch-size", "1"], "--batch-size must be at least 2"),
    ("linprobe", ["--batch-size", "0"], "--batch-size must be at least 2"),
    ("linprobe", ["--weight-decay", "-1"], "--weight-decay must be at least 0"),
    ("finetune", ["--epochs", "0"], "--epochs must be at least 1"),
    ("finetune", ["--blr", "-1"], "--blr must be in (0, 10]"),
    ("finetune", ["--drop-path", "2"], "--drop-path must be in [0, 1)"),
    ("finetune", ["--auto-augment", "rand-x9"], "--auto-augment 'rand-x9' is not a timm augmentation spec"),
    ("finetune", ["--auto-augment", "sharpen"], "--auto-augment 'sharpen' is not a timm augmentation spec"),
    ("finetune", ["--clip-grad", "-1"], "--clip-grad must be more than 0"),
    ("finetune", ["--weight-decay", "-1"], "--weight-decay must be at least 0"),
    ("finetune", ["--layer-decay", "-1"], "--layer-decay must be in (0, 1]"),
    ("finetune", ["--batch-size", "0"], "--batch-size must be at least 1"),
    ("finetune", ["--smoothing", "1.5"], "--smoothing must be in [0, 1)"),
    ("finetune", ["--reprob", "2"], "--reprob must be in [0, 1]"),
    ("finetune", ["--mixup", "-1"], "--mixup must be at least 0"),
    ("segment", ["--crop-size", "0"], "--crop-size must be at least 1"),
    ("segment", ["--blr", "-1"], "--blr must be in (0, 10]"),
    ("segment", ["--blr", "1e9"], "--blr must be in (0, 10]"),
    ("segment", ["--epochs", "0"], "--epochs must be at least 1"),
    ("segment", ["--batch-size", "0"], "--batch-size must be at least 1"),
    ("segment", ["--layer-decay", "-1"], "--layer-decay must be in (0, 1]"),
    ("segment", ["--previews", "-1"], "--previews must be at least 0"),
    ("finetune", ["--val-fraction", "0.25", "--min-lr", "1"], "--min-lr 1 is above the peak lr"),  # at the schedule
    ("knn", ["--seed", "-1"], "--seed must be an integer from 0 to 2147483647, not -1"),
    ("finetune", ["--seed", str(2**64)], "--seed must be an integer from 0 to 2147483647"),
]


@pytest.mark.parametrize("command,args,message", SETTINGS, ids=[f"{c} {' '.join(a)}" for c, a, _ in SETTINGS])
def test_out_of_range_setting_is_one_line(cli, npz_pack, tmp_path, command, args, message):
    quick = QUICK[:4] if command == "knn" else QUICK
    result = cli(command, BACKBONE, "--data", npz_pack, *quick, *args, "--out", tmp_path / "out")
    assert message in error_line(result)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,message", [
    (["--clip-grad", "-1"], "--clip-grad must be more than 0"),
    (["--weight-decay", "-1"], "--weight-decay must be at least 0"),
    (["--blr", "1e9"], "--blr must be in (0, 10]"),
    (["--seed", "-1"], "--seed must be an integer from 0 to 2147483647, not -1"),
    (["--seed", str(2**32)], "--seed must be an integer from 0 to 2147483647, not 4294967296"),
    (["--min-lr", "1"], "--min-lr 1 is above the peak lr"),  # the cosine would climb to it
    (["--mask-ratio", "0.999"], "--mask-ratio 0.999 leaves none of the 64 patches of vit_tiny_patch4_32 visible; "
                                "use at most 0.984"),
    (["--method", "pixmim", "--lowpass-radius", "0"], "--lowpass-radius 0.0 is outside (0, 22.6)"),
    (["--device", "cuda:x"], "unknown device 'cuda:x'"),
])
def test_out_of_range_pretrain_setting_is_one_line(cli, npz_pack, tmp_path, args, message):
    assert message in error_line(cli(*tiny_pretrain_args(npz_pack, tmp_path / "r", *args)))
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("config,message", [
    (LinprobeConfig(epochs=0), "--epochs"),
    (FinetuneConfig(drop_path=2.0), "--drop-path"),
    (FinetuneConfig(batch_size=3), "even --batch-size"),
    (SegmentConfig(crop_size=0), "--crop-size"),
    (KnnConfig(k=0), "--k"),
])
def test_library_configs_validate_too(config, message):
    with pytest.raises(MimzooError, match=message):
        config.validate()


def test_library_run_validates_before_loading(tmp_path):
    with pytest.raises(MimzooError, match="--temperature"):  # the backbone would not resolve: it is never looked at
        run_knn(DownstreamInput("nowhere/at-all", "builtin"), KnnConfig(temperature=0.0, out=str(tmp_path)))
