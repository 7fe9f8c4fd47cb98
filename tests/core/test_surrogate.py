import pytest
import torch

from spikequant.errors import ConfigError
from spikequant.registry import SURROGATES
from spikequant.surrogate import Sigmoid, Triangle, create_surrogate

ALL = [SURROGATES.create(name, alpha=a) for name in SURROGATES.names() for a in (0.5, 1.0, 4.0)]


def _away_from_kinks(s, q):
    # triangle and rectangle have kinks/jumps at 0 and at their support edges
    edges = torch.tensor(
        [0.0, 1 / s.alpha, -1 / s.alpha, 0.5 / s.alpha, -0.5 / s.alpha], dtype=q.dtype
    )
    return q[(q[:, None] - edges[None]).abs().min(1).values > 1e-3]


@pytest.mark.parametrize("surrogate", ALL, ids=str)
def test_grad_matches_finite_difference_of_smooth(surrogate):
    q = _away_from_kinks(surrogate, torch.linspace(-3, 3, 2001, dtype=torch.float64))
    h = 1e-6
    fd = (surrogate.smooth(q + h) - surrogate.smooth(q - h)) / (2 * h)
    torch.testing.assert_close(surrogate.grad(q), fd, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("surrogate", ALL, ids=str)
def test_forward_is_heaviside_and_backward_is_surrogate(surrogate):
    q = torch.tensor([-1.0, -1e-7, 0.0, 1e-7, 2.0], dtype=torch.float64, requires_grad=True)
    z = surrogate(q)
    assert z.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]  # Heaviside(0) = 1
    (g,) = torch.autograd.grad(z.sum(), q)
    torch.testing.assert_close(g, surrogate.grad(q.detach()))


def test_smooth_functions_go_from_zero_to_one():
    for s in ALL:
        ends = s.smooth(torch.tensor([-1e4, 1e4], dtype=torch.float64))
        torch.testing.assert_close(
            ends, torch.tensor([0.0, 1.0], dtype=torch.float64), atol=1e-3, rtol=0
        )


def test_spquant_triangle_values():
    t = Triangle(alpha=1.0)
    got = t.grad(torch.tensor([0.0, 0.5, -0.5, 1.0, -1.5]))
    assert got.tolist() == [1.0, 0.5, 0.5, 0.0, 0.0]


def test_create_surrogate_accepts_names_dicts_objects():
    assert create_surrogate("sigmoid") == Sigmoid(alpha=4.0)
    assert create_surrogate({"name": "atan", "alpha": 3}).alpha == 3
    assert create_surrogate(None) == Sigmoid()
    with pytest.raises(ConfigError, match="unknown surrogate"):
        create_surrogate("nope")
    with pytest.raises(ConfigError, match="alpha"):
        Sigmoid(alpha=-1)
