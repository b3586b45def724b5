"""What every solver returns (:class:`SolverResult`) and what a callback sees
(:class:`IterationState`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..problem import to_output


@dataclass
class SolverResult:
    """Codes and their certificate, from any algorithm.

    Tensors at the tensor level; the public entry points return NumPy arrays when the caller
    passed NumPy (see :meth:`to_output`).

    Attributes
    ----------
    z : array or tensor, shape (batch, *code_dims)
        The codes.
    gap : array or tensor, shape (batch,)
        Duality gap per sample, an upper bound on ``E(z) − min E``; NaN where a method has no
        certificate (a non-convex decoder). A feed-forward encoder's result holds only ``z``
        and ``n_iter``; its other fields are ``None``.
    energy : array or tensor, shape (batch,)
        Energy ``E(z)`` per sample.
    converged : array or tensor, shape (batch,)
        Whether each sample met the stopping rule; never true where the energy or gap is not
        finite.
    n_iter_per_sample : array or tensor, shape (batch,)
        Iterations each sample ran.
    n_iter : int
        The largest of those.
    method : str
        The algorithm that produced the codes (``"fista"``, ``"ista"``, ``"encoder"`` ...).
    lipschitz : array or tensor or None, shape (batch,) or ()
        The step-size inverse the run ended with, where a method adapts it (to warm-start the
        next run); ``None`` otherwise.
    """

    z: Any
    gap: Any
    energy: Any
    converged: Any
    n_iter_per_sample: Any
    n_iter: int
    method: str = "fista"
    lipschitz: Any = None

    @property
    def all_converged(self) -> bool:
        """Whether every sample converged."""
        return bool(self.converged.all())

    def to_output(self, numpy_out: bool) -> SolverResult:
        """This result with every tensor converted to NumPy when ``numpy_out``.

        Parameters
        ----------
        numpy_out : bool
            Whether to convert the tensors.

        Returns
        -------
        SolverResult
            ``self`` when ``numpy_out`` is false, else a copy holding NumPy arrays.
        """
        if not numpy_out:
            return self
        return replace(
            self,
            **{name: to_output(getattr(self, name), True)
               for name in ("z", "gap", "energy", "converged", "n_iter_per_sample", "lipschitz")},
        )


@dataclass(frozen=True)
class IterationState:
    """What a solver's ``callback(iteration, state)`` sees after each iteration.

    A read-only view: the tensors are the solver's own (no copy is made), so a callback must
    not modify them in place.

    Attributes
    ----------
    iteration : int
        The iteration just finished (1-based; the callback's first argument).
    batch_size : int
        Size of the whole batch being solved.
    z : torch.Tensor, shape (n_active, *code_dims)
        Current iterates of the samples still being solved.
    active : torch.Tensor, shape (n_active,)
        Their indices in the batch (``z[i]`` is sample ``active[i]``).
    energy, gap : torch.Tensor or None, shape (n_active,)
        Energy and duality gap, on the iterations where the solver computed them (stopping
        checks), else ``None``. A solver without a certificate reports ``gap=None``.
    """

    iteration: int
    batch_size: int
    z: torch.Tensor
    active: torch.Tensor
    energy: torch.Tensor | None = None
    gap: torch.Tensor | None = None

    @property
    def mask(self) -> torch.Tensor:
        """Which samples of the batch are still being solved: bool, shape (batch_size,)."""
        mask = torch.zeros(self.batch_size, dtype=torch.bool, device=self.active.device)
        return mask.index_fill_(0, self.active, True)


Callback = Callable[[int, IterationState], Any]
"""``callback(iteration, state)``, called after every iteration (1-based)."""


__all__ = ["SolverResult", "IterationState", "Callback"]
