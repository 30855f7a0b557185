"""The trainer's optimizer: Adam (Kingma & Ba 2015) with eps 1e-5, fused on the CPU, checked by hand."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from agents.ppo import make_optimizer


def hand_adam(
    params: list[torch.Tensor], grads: list[list[torch.Tensor]], lr: float, eps: float = 1e-5
) -> list[torch.Tensor]:
    """Adam written out in float64 (betas 0.9, 0.999): the parameters after one step per gradient list."""
    beta1, beta2 = 0.9, 0.999
    params = [p.double().clone() for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            g = g.double()
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat = m[i] / (1 - beta1**t)
            v_hat = v[i] / (1 - beta2**t)
            params[i] = params[i] - lr * m_hat / (v_hat.sqrt() + eps)
    return params


def test_cpu_optimizer_is_fused_adam_and_matches_adam_by_hand():
    g = torch.Generator().manual_seed(0)
    shapes = [(32, 4, 8, 8), (32,), (512, 3136), (18, 512)]
    initial = [torch.randn(s, generator=g) for s in shapes]
    grads = [[torch.randn(s, generator=g) * 10.0**-k for s in shapes] for k in range(1, 5)]
    params = [torch.nn.Parameter(p.clone()) for p in initial]
    optimizer = make_optimizer(params, 2.5e-4, torch.device("cpu"))
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.defaults["fused"] is True and optimizer.defaults["eps"] == 1e-5
    for step_grads in grads:
        for p, grad in zip(params, step_grads, strict=True):
            p.grad = grad.clone()
        optimizer.step()
    expected = hand_adam(initial, grads, 2.5e-4)
    # four steps of about lr (2.5e-4) each; the tolerance is well under one step
    for p, start, ref in zip(params, initial, expected, strict=True):
        assert (p.detach() - start).abs().max() > 5e-4
        assert_close(p.detach().double(), ref, rtol=1e-6, atol=1e-7)
