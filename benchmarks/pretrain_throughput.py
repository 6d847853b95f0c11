"""Pretraining step throughput (model-only), mimzoo's methods against transformers' ViTMAE in the same run.

One JSON line per configuration: forward + backward + AdamW step on a synthetic batch already on the device,
bf16 autocast on CUDA, warm-up steps then timed steps between synchronisations. MFU uses FLOPs counted with
torch's FlopCounterMode over one forward + backward and the achievable peak from ../shared/docs/performance.md.

    python benchmarks/pretrain_throughput.py --arch vit_base_patch16_224 --batch 256 --methods all --out b.jsonl
    python benchmarks/pretrain_throughput.py --arch vit_tiny_patch4_32 --batch 8 --steps 2 --warmup 1  # CPU smoke

A configuration that fails (out of memory, a compile error) prints a JSON line with its error and the others run.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from results_log import emit  # benchmarks/, first on the path of a script run from there
from torch.utils.flop_counter import FlopCounterMode

from mimzoo.archs import get_arch
from mimzoo.engine.config import PretrainConfig
from mimzoo.methods import METHODS, get_method, resolve_defaults, view_size

# dense bf16 FLOP/s a large matmul reaches (performance.md: 798 of the paper's 989 on an H100); the H200 is the
# same GH100 chip with more and faster memory, so the same figure
ACHIEVABLE_PEAK_FLOPS = {"H100": 798e12, "H200": 798e12}


LossFn = Callable[[torch.Tensor], torch.Tensor]


def build_mimzoo(method: str, arch_name: str) -> tuple[torch.nn.Module, LossFn, int]:
    """The method's pretrainer, its loss and its view size (misalign's zoom-in takes larger views)."""
    cfg = resolve_defaults(PretrainConfig(method=method, arch=arch_name))
    spec, arch = get_method(method), get_arch(arch_name)
    model = spec.build(arch, cfg)
    return model, lambda images: model(images).loss, view_size(arch, cfg)


def build_transformers_vitmae(arch_name: str) -> tuple[torch.nn.Module, LossFn, int]:
    """The peer: transformers' ViTMAEForPreTraining with the same encoder/decoder shape, sdpa attention."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    arch = get_arch(arch_name)
    vit = timm.create_model(arch.timm_name, num_classes=0, **arch.model_args)
    config = ViTMAEConfig(
        image_size=arch.img_size, patch_size=arch.patch_size, hidden_size=vit.embed_dim,
        num_hidden_layers=len(vit.blocks), num_attention_heads=vit.blocks[0].attn.num_heads,
        intermediate_size=vit.blocks[0].mlp.fc1.out_features, decoder_hidden_size=arch.decoder_dim,
        decoder_num_hidden_layers=arch.decoder_depth, decoder_num_attention_heads=arch.decoder_heads,
        decoder_intermediate_size=4 * arch.decoder_dim, mask_ratio=0.75, norm_pix_loss=True,
        attn_implementation="sdpa",
    )
    model = ViTMAEForPreTraining(config)
    return model, lambda images: model(pixel_values=images).loss, arch.img_size


def training_step(model: torch.nn.Module, loss_fn: LossFn, size: int, args: argparse.Namespace,
                  device: torch.device) -> Callable[[], None]:
    """One step on a synthetic batch already on the device: forward and backward (bf16 autocast on CUDA, compiled
    with ``--compile``), then AdamW(0.9, 0.95) (fused with ``--fused-adamw``)."""
    model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95),
                                  fused=args.fused_adamw or None)
    images = torch.randn(args.batch, 3, size, size, device=device)
    step_fn = torch.compile(loss_fn) if args.compile else loss_fn

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = step_fn(images)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def measure(name: str, model: torch.nn.Module, loss_fn: LossFn, size: int, args: argparse.Namespace,
            device: torch.device) -> dict:
    step = training_step(model, loss_fn, size, args, device)
    with FlopCounterMode(display=False) as counter:  # counts matmuls, convolutions and attention, not AdamW
        step()
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    img_per_s = args.batch * args.steps / seconds
    flops_per_image = counter.get_total_flops() / args.batch
    gpu = device_name(device)
    peak = next((v for k, v in ACHIEVABLE_PEAK_FLOPS.items() if k in gpu), None)
    return {
        "impl": name, "arch": args.arch, "size": size, "batch": args.batch,
        "dtype": "bf16" if device.type == "cuda" else "fp32",
        "compile": args.compile, "fused_adamw": args.fused_adamw, "device": gpu, "img_per_s": round(img_per_s, 2),
        "gflop_per_image": round(flops_per_image / 1e9, 2),
        "mfu": round(img_per_s * flops_per_image / peak, 4) if peak else None,
        "peak_mem_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
    }


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="vit_base_patch16_224")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--methods", default="mae", help="comma-separated mimzoo methods, or all")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--fused-adamw", action="store_true", help="AdamW(fused=True)")
    parser.add_argument("--no-peer", action="store_true", help="skip transformers' ViTMAE (also when not installed)")
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    methods = list(METHODS) if args.methods == "all" else args.methods.split(",")
    builders = [(f"mimzoo:{m}", lambda m=m: build_mimzoo(m, args.arch)) for m in methods]
    if not args.no_peer and importlib.util.find_spec("transformers"):
        builders.insert(0, ("transformers:ViTMAEForPreTraining", lambda: build_transformers_vitmae(args.arch)))
    results = []
    for name, build in builders:
        try:
            model, loss_fn, size = build()
            result = measure(name, model, loss_fn, size, args, device)
            model.cpu()
        except Exception as exc:  # one failing configuration must not cost the others on a borrowed GPU
            result = {"impl": name, "arch": args.arch, "batch": args.batch, "compile": args.compile,
                      "device": device_name(device), "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        model = loss_fn = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
        results.append(result)
        peer = results[0] if results[0]["impl"].startswith("transformers") else None
        if peer and result is not peer and result.get("img_per_s") and peer.get("img_per_s"):
            result["speedup_vs_transformers"] = round(result["img_per_s"] / peer["img_per_s"], 3)
        emit(result, args.out)


if __name__ == "__main__":
    main()
