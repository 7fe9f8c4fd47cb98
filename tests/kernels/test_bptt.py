"""Checkpointed BPTT gives the gradients of plain BPTT."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from spikequant import kernels
from spikequant.bptt import CheckpointedBPTT, checkpointed_forward
from spikequant.errors import ConfigError
from spikequant.layers import TimeFold
from spikequant.neurons import IF, LIF, ATIFu, reset_state


def _network(backend: str, with_bn: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers = [TimeFold(nn.Conv2d(2, 6, 3, padding=1))]
    if with_bn:
        layers.append(TimeFold(nn.BatchNorm2d(6)))
    layers += [
        LIF(tau=2.0, learn_threshold=True, num_channels=6, backend=backend),
        TimeFold(nn.Flatten()),
        TimeFold(nn.Linear(6 * 5 * 5, 8)),
        ATIFu(threshold=0.8, backend=backend),
        TimeFold(nn.Linear(8, 3)),
        IF(reset="zero", backend=backend),
    ]
    return nn.Sequential(*layers)


def _grads(model, x, chunk):
    reset_state(model)
    model.zero_grad()
    x = x.clone().requires_grad_(True)
    out = model(x) if chunk is None else checkpointed_forward(model, x, chunk)
    weights = torch.linspace(-1, 1, out.numel()).view_as(out)
    # the final membrane also enters the loss, so the gradient through the carried state counts
    last = [m for m in model.modules() if isinstance(m, LIF)][0].state.v
    ((out * weights).sum() + last.pow(2).sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.detach(), x.grad, grads


# with SPIKEQUANT_REQUIRE_KERNELS=1 (CI) a failed build fails the "fused" cases instead of skipping
backends = ["torch"] + (
    ["fused"] if kernels.available() or os.environ.get("SPIKEQUANT_REQUIRE_KERNELS") == "1" else []
)


@pytest.mark.parametrize("backend", backends)
@pytest.mark.parametrize("chunk", [1, 3, 4])
def test_checkpointed_gradients_equal_plain_bptt(backend, chunk):
    x = torch.randn(10, 4, 2, 5, 5, generator=torch.Generator().manual_seed(1)) * 2
    model = _network(backend)
    ref_out, ref_x, ref_params = _grads(model, x, None)
    out, gx, params = _grads(model, x, chunk)
    assert torch.equal(out, ref_out)
    torch.testing.assert_close(gx, ref_x, rtol=1e-5, atol=1e-6)
    for name in ref_params:
        torch.testing.assert_close(params[name], ref_params[name], rtol=1e-5, atol=1e-6, msg=name)


def test_batchnorm_eval_mode_equal_and_running_stats_updated_once():
    x = torch.randn(6, 4, 2, 5, 5, generator=torch.Generator().manual_seed(2))
    model = _network("torch", with_bn=True).eval()
    ref = _grads(model, x, None)
    got = _grads(model, x, 2)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-5, atol=1e-6)

    # training mode: the statistics are updated once per chunk (forward), not again in backward
    train_model = _network("torch", with_bn=True).train()
    bn = train_model[1].module
    with torch.no_grad():
        reset_state(train_model)
        for part in x.split(2):
            train_model(part)
    expected = bn.running_mean.clone()
    train_model = _network("torch", with_bn=True).train()
    bn = train_model[1].module
    reset_state(train_model)
    checkpointed_forward(train_model, x, 2).sum().backward()
    torch.testing.assert_close(bn.running_mean, expected)


def test_wrapper_and_bad_chunk():
    model = CheckpointedBPTT(_network("torch"), chunk=2)
    out = model(torch.randn(5, 2, 2, 5, 5))
    assert out.shape == (5, 2, 3)
    with pytest.raises(ConfigError):
        CheckpointedBPTT(_network("torch"), chunk=0)
