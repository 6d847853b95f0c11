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
    losses = []
    for model in (eager, torch.compile(compiled, backend="aot_eager", fullgraph=True)):
        torch.manual_seed(2)  # the same masks
        loss = model(views).loss
        loss.backward()
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-7, msg=name)
