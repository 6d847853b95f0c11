"""`--compile`: every method's forward is one graph (no break, so nothing falls back to eager between kernels) and
the traced graph trains what eager does. Inductor's kernels take minutes to build on 2 CPU cores, so the graph runs
on `aot_eager`: dynamo's capture and AOT autograd's backward, the parts that decide what is computed."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from conftest import TINY_ARCH
from mimzoo.archs import get_arch
from mimzoo.engine.config import PretrainConfig
from mimzoo.fusion import default_layers
from mimzoo.methods import METHODS, get_method, resolve_defaults, view_size

# 8 of ViT-T's 12 blocks: tracing time grows with depth, and 8 still gives every method its taps (MFF's six
# levels, LocalMIM's three)
ARCH = replace(get_arch(TINY_ARCH), model_args={**get_arch(TINY_ARCH).model_args, "depth": 8})


FACTORIES = {"arange", "tensor", "full", "zeros", "ones", "empty", "linspace", "eye", "rand", "randn", "randint",
             "randperm"}


def host_work(graph: torch.fx.Graph) -> list[str]:
    """Nodes of a dynamo graph that make a tensor without naming its device, or move one between devices: on a GPU
    both are host work in every compiled step (a CPU kernel, then a copy to the device), which the eager step's
    cached device constants do not do."""
    return [node.format_node() for node in graph.nodes
            if (node.op == "call_function" and getattr(node.target, "__name__", "") in FACTORIES
                and "device" not in node.kwargs)
            or (node.op == "call_method" and node.target in ("to", "cuda", "cpu")
                and any(isinstance(a, (str, torch.device)) for a in (*node.args[1:], *node.kwargs.values())))]


@pytest.mark.filterwarnings("error::UserWarning")  # dynamo's warnings, e.g. of a cache it traces through
@pytest.mark.parametrize("method", list(METHODS))
def test_the_compiled_forward_is_one_graph_with_eagers_loss_and_gradients(method):
    cfg = resolve_defaults(PretrainConfig(method=method, arch=TINY_ARCH))
    if cfg.mff_layers is not None:  # resolved for the named arch's 12 blocks
        cfg.mff_layers = default_layers(8)
    torch.manual_seed(0)
    eager = get_method(method).build(ARCH, cfg)
    assert len(eager.encoder.blocks) == 8
    compiled = copy.deepcopy(eager)
    size = view_size(ARCH, cfg)
    views = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(1))
    graphs = []

    def aot_eager_noting_the_graph(gm, inputs):
        graphs.append(gm.graph)
        return torch._dynamo.lookup_backend("aot_eager")(gm, inputs)

    losses = []
    for model in (eager, torch.compile(compiled, backend=aot_eager_noting_the_graph, fullgraph=True)):
        torch.manual_seed(2)  # the same masks
        loss = model(views).loss
        loss.backward()
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    assert len(graphs) == 1 and host_work(graphs[0]) == []
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-7, msg=name)


def test_the_fused_adamw_of_gpu_runs_takes_the_plain_ones_steps():
    """pretrain, finetune and segment step on a GPU with AdamW(fused=True) (``engine/optim.py: adamw``); torch's CPU
    build of that kernel, given the same gradients, takes the default implementation's steps to float rounding,
    weight decay groups and all. (Adam turns a rounding difference in the weights into different steps for
    near-zero gradients, so both take the plain model's gradients.)"""
    from mimzoo.engine.pretrain import pretrain_optimizer

    cfg = resolve_defaults(PretrainConfig(method="mae", arch=TINY_ARCH))
    torch.manual_seed(0)
    plain = get_method("mae").build(ARCH, cfg)
    fused, start = copy.deepcopy(plain), copy.deepcopy(plain)
    optimizers = [pretrain_optimizer(plain, cfg, 1e-3, torch.device("cpu")),
                  pretrain_optimizer(fused, cfg, 1e-3, torch.device("cuda"))]
    assert not optimizers[0].defaults["fused"] and optimizers[1].defaults["fused"]
    assert all(optimizer.defaults["betas"] == (0.9, 0.95) for optimizer in optimizers)  # MAE's
    views = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for step in range(3):
        torch.manual_seed(step)
        plain(views).loss.backward()
        for a, b in zip(plain.parameters(), fused.parameters(), strict=True):
            b.grad = None if a.grad is None else a.grad.clone()  # fixed sin-cos positions have none
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad()
    for (name, a), b in zip(plain.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=lambda text, name=name: f"{name}: {text}")
    moved = max((a - c).abs().max() for a, c in zip(plain.parameters(), start.parameters(), strict=True))
    assert moved > 1e-3  # it trained


def test_a_resumed_run_keeps_its_own_adamw_kernel():
    """A checkpoint's optimizer groups carry the kernel of the run that saved it: a GPU run resuming one saved on a
    CPU (or before the fused kernel) would step unfused, and the reverse would ask a CPU for the GPU's choice."""
    from mimzoo.engine.optim import adamw, load_optimizer_state

    model = torch.nn.Linear(4, 2)
    plain = adamw(model.parameters(), 1e-3, torch.device("cpu"))
    model(torch.randn(3, 4)).sum().backward()
    plain.step()
    fused = adamw(model.parameters(), 1e-3, torch.device("cuda"))  # as a GPU run builds it (here on CPU tensors)
    load_optimizer_state(fused, plain.state_dict())
    assert all(group["fused"] for group in fused.param_groups) and fused.state_dict()["state"][0]["step"] == 1
    fused.step()  # torch's CPU build of the fused kernel takes it
    load_optimizer_state(plain, fused.state_dict())
    assert not any(group["fused"] for group in plain.param_groups)
