"""Central finite differences for the gradient checks of the TTFS tests."""

import torch


def central_difference(f, x: torch.Tensor, eps: float) -> torch.Tensor:
    """``(f(x + eps e_i) - f(x - eps e_i)) / (2 eps)`` for every element ``i`` of ``x`` (changed
    in place and restored; ``f`` reads ``x`` and returns a scalar tensor)."""
    grad = torch.zeros_like(x)
    flat, gflat = x.view(-1), grad.view(-1)
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + eps
        hi = f().item()
        flat[i] = old - eps
        lo = f().item()
        flat[i] = old
        gflat[i] = (hi - lo) / (2 * eps)
    return grad
