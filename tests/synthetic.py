"""Small synthetic sparse-coding data shared by the tests."""

from __future__ import annotations

import torch


def sparse_mixture(n_features: int, n_atoms: int, n: int, k: int, *, seed: int = 0,
                   noise: float = 0.05, positive: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """A unit-norm Gaussian dictionary ``W`` ``(n_features, n_atoms)`` and ``n`` signals
    ``(n, n_features)`` made of ``k`` atoms each plus Gaussian noise, in float64.

    Amplitudes are ``2·N(0, 1)``, or ``U(0.5, 1.5)`` with ``positive``.
    """
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n_features, n_atoms, generator=g, dtype=torch.float64)
    W /= W.norm(dim=0)
    Z = torch.zeros(n, n_atoms, dtype=torch.float64)
    idx = torch.rand(n, n_atoms, generator=g).argsort(1)[:, :k]
    if positive:
        amplitudes = torch.rand(n, k, generator=g, dtype=torch.float64) + 0.5
    else:
        amplitudes = torch.randn(n, k, generator=g, dtype=torch.float64) * 2
    Z.scatter_(1, idx, amplitudes)
    Y = Z @ W.T + noise * torch.randn(n, n_features, generator=g, dtype=torch.float64)
    return W, Y
