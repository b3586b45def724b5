"""Dense dictionary ``W`` of shape ``(n_features, n_atoms)``: ``y = W z``."""

from __future__ import annotations

from typing import Any

import torch

from .._validation import as_tensor
from .base import LinearOperator


class DenseDictionary(LinearOperator):
    """``decode(z) = z Wᵀ`` for codes ``(batch, n_atoms)`` and signals ``(batch, n_features)``.

    ``W`` holds one atom per column. When atoms are few relative to features the Gram matrix
    ``WᵀW`` is cached and :meth:`gram` costs one ``n_atoms × n_atoms`` product per sample.
    """

    def __init__(self, W: Any) -> None:
        super().__init__()
        self.W = as_tensor(W, "W", ndim=2)
        self._gram_matrix: torch.Tensor | None = None

    @property
    def atoms(self) -> torch.Tensor:
        return self.W

    @property
    def n_atoms(self) -> int:
        return self.W.shape[1]

    @property
    def n_features(self) -> int:
        return self.W.shape[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """A copy of this operator on another device or in another precision."""
        return DenseDictionary(self.W.to(device=device, dtype=dtype))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W.T

    def adjoint(self, r: torch.Tensor) -> torch.Tensor:
        return r @ self.W

    def gram_matrix(self) -> torch.Tensor:
        """``WᵀW``, ``(n_atoms, n_atoms)``, cached."""
        if self._gram_matrix is None:
            self._gram_matrix = self.W.T @ self.W
        return self._gram_matrix

    def gram(self, z: torch.Tensor) -> torch.Tensor:
        if self.n_atoms <= 2 * self.n_features:
            return z @ self.gram_matrix()
        return self.adjoint(self.decode(z))

    def code_shape(self, signal_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.n_atoms,)

    def check_signal(self, y: torch.Tensor, name: str = "Y") -> None:
        if y.dim() != 2 or y.shape[1] != self.n_features:
            raise ValueError(
                f"{name} must have shape (batch, {self.n_features}) to match W of shape "
                f"{tuple(self.W.shape)}, got {tuple(y.shape)}"
            )

    def check_code(self, z: torch.Tensor, name: str = "Z") -> None:
        if z.dim() != 2 or z.shape[1] != self.n_atoms:
            raise ValueError(
                f"{name} must have shape (batch, {self.n_atoms}): one column per atom of W "
                f"{tuple(self.W.shape)}, got {tuple(z.shape)}"
            )

    def invalidate(self) -> None:
        super().invalidate()
        self._gram_matrix = None

    def normalize_(self) -> DenseDictionary:
        norms = self.W.norm(dim=0, keepdim=True)
        self.W.div_(norms.clamp_min(torch.finfo(self.dtype).tiny))
        self.invalidate()
        return self
