"""Where a pretraining step's time goes: torch.profiler over a few steps of one method, as pretrain_throughput.py
takes them (bf16 autocast on CUDA, AdamW, a synthetic batch on the device, eager or compiled).

One JSON line per method: the step's wall time, the device's busy time within it (kernels; on the CPU, aten ops),
that time by kind (matmul, attention, optimizer, elementwise and the rest) and the kernels that take the most.
A device busy for much less than the wall time waits on the host (launches, syncs); a large "other" share points
at the small kernels that compiling fuses.

    python benchmarks/profile_step.py --arch vit_base_patch16_224 --batch 256 --methods mae,mff --out profile.jsonl
    python benchmarks/profile_step.py --arch vit_tiny_patch4_32 --batch 8 --steps 1 --warmup 1  # CPU smoke
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from pretrain_throughput import build_mimzoo, device_name, training_step  # benchmarks/, beside this script
from results_log import emit
from torch.profiler import ProfilerActivity, profile

# kernel (CUDA) or op (CPU) name fragments of each kind, first match wins: attention before matmul, as attention
# kernels are built on cutlass too (fmha_cutlassF..., flash's cutlass::bfloat16_t)
KINDS = {
    "attention": ("flash", "fmha", "attention", "efficient"),
    "matmul": ("gemm", "cutlass", "xmma", "nvjet", "cublas", "aten::mm", "aten::addmm", "aten::bmm", "aten::linear",
               "aten::convolution"),
    "optimizer": ("multi_tensor", "foreach", "adam"),
    "elementwise": ("elementwise", "vectorized", "aten::add", "aten::mul", "aten::gelu", "aten::copy_"),
}


def kind(name: str) -> str:
    lowered = name.lower()
    return next((k for k, fragments in KINDS.items() if any(f in lowered for f in fragments)), "other")


def profile_method(method: str, args: argparse.Namespace, device: torch.device) -> dict:
    step = training_step(*build_mimzoo(method, args.arch), args, device)
    cuda = device.type == "cuda"
    for _ in range(args.warmup):
        step()
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        if cuda:
            torch.cuda.synchronize()
        wall = (time.perf_counter() - start) / args.steps
    # on CUDA the kernels are the device's work (not the annotations spanning them: Optimizer.step#..., compiled
    # regions); on the CPU the aten ops that do the work (self time, no nesting)
    events = [e for e in prof.key_averages() if (e.device_type.name == "CUDA") == cuda
              and not getattr(e, "is_user_annotation", False) and (cuda or e.key.startswith("aten::"))]
    busy = {e.key: (e.self_device_time_total if cuda else e.self_cpu_time_total) / args.steps / 1e6
            for e in events}
    total = sum(busy.values())
    by_kind: dict[str, float] = {}
    for name, seconds in busy.items():
        by_kind[kind(name)] = by_kind.get(kind(name), 0.0) + seconds
    top = sorted(busy.items(), key=lambda item: -item[1])[: args.top]
    return {
        "impl": f"mimzoo:{method}", "arch": args.arch, "batch": args.batch, "compile": args.compile,
        "device": device_name(device), "step_ms": round(wall * 1e3, 3), "busy_ms": round(total * 1e3, 3),
        "busy_fraction": round(total / wall, 3),
        "share": {k: round(v / total, 3) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "top": [{"name": name[:120], "ms": round(seconds * 1e3, 3), "kind": kind(name)} for name, seconds in top],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="vit_base_patch16_224")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--methods", default="mae", help="comma-separated mimzoo methods")
    parser.add_argument("--steps", type=int, default=5, help="profiled steps")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--fused-adamw", action="store_true", help="AdamW(fused=True)")
    parser.add_argument("--top", type=int, default=15, help="kernels listed")
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for method in args.methods.split(","):
        emit(profile_method(method, args, device), args.out)


if __name__ == "__main__":
    main()
