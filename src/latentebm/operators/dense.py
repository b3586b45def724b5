"""Dense dictionary ``W`` of shape ``(n_features, n_atoms)``: ``y = W z``."""

from __future__ import annotations

from typing import Any

import torch

from .._docs import fill_doc
from .._validation import as_tensor
from .base import LinearOperator, unit_norm

GRAM_MAX_ATOMS = 4096
"""The most atoms whose Gram matrix a solver builds unasked (134 MB in float64 at the bound;
16 000 atoms would take 2 GB): above it FISTA skips its active-set finish and ``"auto"`` leaves
``"gram_cd"`` aside."""


@fill_doc
class DenseDictionary(LinearOperator):
    """``decode(z) = z Wᵀ`` for codes ``(batch, n_atoms)`` and signals ``(batch, n_features)``.

    ``W`` holds one atom per column. When atoms are few relative to features the Gram matrix
    ``WᵀW`` is cached and :meth:`gram` costs one ``n_atoms × n_atoms`` product per sample.

    Parameters
    ----------
    W : array-like or torch.Tensor of shape (n_features, n_atoms)
        The dictionary, one atom per column (a tensor is used as is, not copied:
        :meth:`normalize_` rescales it in place).
    check_input : bool, default=True
        Check ``W`` (type, rank, finite values: one host synchronisation). ``False`` takes a
        float tensor of the right rank as it is, for a model's own weights inside ``forward``
        or an iteration loop, where the entry point has checked them.
    """

    atom_axis = 1

    def __init__(self, W: Any, *, check_input: bool = True) -> None:
        super().__init__()
        self.W = as_tensor(W, "W", ndim=2) if check_input else W
        self._gram_matrix: torch.Tensor | None = None

    @property
    def atoms(self) -> torch.Tensor:
        return self.W

    @property
    def n_features(self) -> int:
        return self.W.shape[0]

    def _like(self, atoms: torch.Tensor) -> DenseDictionary:
        return DenseDictionary(atoms, check_input=False)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z Wᵀ``.

        Parameters
        ----------
        {z_dense}

        {returns_dense_signals}
        """
        return z @ self.W.T

    def adjoint(self, r: torch.Tensor) -> torch.Tensor:
        """``r W``.

        Parameters
        ----------
        r : torch.Tensor of shape (batch, n_features)
            Signal-shaped tensor.

        {returns_dense_codes}
        """
        return r @ self.W

    @property
    def has_gram_matrix(self) -> bool:
        """True: ``WᵀW`` can always be built (:meth:`gram_matrix`; ``n_atoms²`` values)."""
        return True

    def matrix(self) -> torch.Tensor:
        """``W`` itself, ``(n_features, n_atoms)``."""
        return self.W

    def gram_matrix(self) -> torch.Tensor:
        """``WᵀW``, ``(n_atoms, n_atoms)``, cached."""
        self._drop_stale_caches()
        if self._gram_matrix is None:
            self._gram_matrix = self.W.T @ self.W
        return self._gram_matrix

    def gram(self, z: torch.Tensor) -> torch.Tensor:
        """``z WᵀW``, through the cached Gram matrix when ``n_atoms <= 2 n_features``.

        Parameters
        ----------
        {z_dense}

        {returns_dense_codes}
        """
        if self.n_atoms <= 2 * self.n_features:
            return z @ self.gram_matrix()
        return self.adjoint(self.decode(z))

    def code_shape(self, signal_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``(n_atoms,)`` whatever the signal shape.

        Parameters
        ----------
        signal_shape : tuple of int
            Shape of one signal, ``(n_features,)`` (not checked).

        {returns_shape}
            ``(n_atoms,)``.
        """
        return (self.n_atoms,)

    def check_signal(self, y: torch.Tensor, name: str = "Y") -> None:
        """Raise ``ValueError`` unless ``y`` has shape ``(batch, n_features)``.

        Parameters
        ----------
        {check_signals_Y}
        """
        self._check_rows(y, name, self.n_features, " to match W of shape")

    def check_code(self, z: torch.Tensor, name: str = "Z") -> None:
        """Raise ``ValueError`` unless ``z`` has shape ``(batch, n_atoms)``.

        Parameters
        ----------
        {check_codes_Z}
        """
        self._check_rows(z, name, self.n_atoms, ": one column per atom of W")

    def _check_rows(self, t: torch.Tensor, name: str, width: int, relation: str) -> None:
        """Raise ``ValueError`` unless ``t`` is ``(batch, width)``; ``relation`` ties it to W."""
        if t.dim() != 2 or t.shape[1] != width:
            raise ValueError(f"{name} must have shape (batch, {width}){relation} "
                             f"{tuple(self.W.shape)}, got {tuple(t.shape)}")

    def invalidate(self) -> None:
        super().invalidate()
        self._gram_matrix = None

    def normalize_(self) -> DenseDictionary:
        self.W.copy_(unit_norm(self.W, dim=0))  # overflow-safe: atoms of 1e200 stay atoms
        self.invalidate()
        return self
