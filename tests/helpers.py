"""Small assertions and test models shared by several test modules."""

from __future__ import annotations

import torch
from torch import nn


def one_line_error(capsys) -> str:
    """What a failed command wrote to stderr, asserted to be one line and no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


class TanhDecoder(nn.Module):
    """``h + tanh(z Wᵀ)``: a decoder that is not linear in ``z`` (``W``: (n_features, n_atoms))."""

    def __init__(self, W: torch.Tensor) -> None:
        super().__init__()
        self.W = nn.Parameter(W.clone())

    def forward(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return h + torch.tanh(z @ self.W.T)

    def code_shape(self, signal_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.W.shape[1],)


def conv_problem(boundary: str, channels: int = 1, n_atoms: int = 3, k: int = 3,
                 hw: tuple[int, int] = (7, 6), batch: int = 2, seed: int = 0):
    """Unit-norm random ``k × k`` kernels as a ``ConvDictionary`` and random images, float64."""
    from latentebm.operators import ConvDictionary

    gen = torch.Generator().manual_seed(seed)
    K = torch.randn(n_atoms, channels, k, k, generator=gen, dtype=torch.float64)
    op = ConvDictionary(K, boundary=boundary).normalize_()
    Y = torch.randn(batch, channels, *hw, generator=gen, dtype=torch.float64)
    return op, Y
