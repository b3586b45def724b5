"""What every solver returns (:class:`SolverResult`) and what a callback sees
(:class:`IterationState`)."""

from __future__ import annotations

import math
import warnings
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
        Certificate per sample, an upper bound on ``E(z) − min E``: the duality gap (on a
        strongly convex L1 problem, a strong-convexity bound where smaller, see
        :mod:`~latentebm.solvers.strong_convexity`);
        NaN where a method has no certificate (a non-convex decoder). A feed-forward
        encoder's result holds only ``z`` and ``n_iter``; its other fields are ``None``.
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

    def warn_unless_converged(self, what: str) -> SolverResult:
        """Warn (:class:`NotConvergedWarning`) when some sample did not meet its tolerance, for
        entry points that hand back ``what`` (optimal codes, free energies) without the flag;
        returns ``self``.

        Parameters
        ----------
        what : str
            What the caller returns from these codes, for the message.

        Returns
        -------
        SolverResult
        """
        missed = ~torch.as_tensor(self.converged)
        if bool(missed.any()):
            worst = float((torch.as_tensor(self.gap) / torch.as_tensor(self.energy).abs())
                          [missed].max())
            how_far = (f"relative gap up to {worst:.3g}" if math.isfinite(worst)
                       else "no duality gap for this energy")
            warnings.warn(
                f"{int(missed.sum())} of {missed.numel()} sample(s) stopped at the iteration "
                f"cap above their tolerance ({how_far}): their {what} "
                "are not the minimum's; raise max_iter (or tol)", NotConvergedWarning,
                stacklevel=3)
        return self

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
        checks), else ``None``; NaN for the samples not checked at this iteration (ADMM
        checks each image on its own schedule). A solver without a certificate reports
        ``gap=None``.
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


class BatchOutputs:
    """The per-sample outputs of a batched solver that retires samples as they converge: each
    stopping check writes the rows still being solved, and :meth:`result` assembles them.

    Parameters
    ----------
    z : torch.Tensor of shape (batch, *code_dims)
        The starting codes (copied); their dtype and device are the outputs'.

    Attributes
    ----------
    z : torch.Tensor of shape (batch, *code_dims)
        The codes.
    energy, gap : torch.Tensor of shape (batch,)
        Energy and duality gap (``+inf`` until a check writes them).
    converged : torch.Tensor of shape (batch,)
        Whether each sample met the stopping rule (bool).
    n_iter : torch.Tensor of shape (batch,)
        Iterations each sample ran (int64).
    """

    def __init__(self, z: torch.Tensor) -> None:
        batch = z.shape[0]
        self.z = z.clone()
        self.converged = torch.zeros(batch, dtype=torch.bool, device=z.device)
        self.n_iter = torch.zeros(batch, dtype=torch.long, device=z.device)
        self.energy = torch.full((batch,), float("inf"), dtype=z.dtype, device=z.device)
        self.gap = self.energy.clone()

    def record(self, iteration: int, rows: torch.Tensor, z: torch.Tensor, done: torch.Tensor,
               energy: torch.Tensor | None = None, gap: torch.Tensor | None = None) -> None:
        """Write the state of the working samples at a stopping check.

        Parameters
        ----------
        iteration : int
            The iteration just finished.
        rows : torch.Tensor of shape (n,)
            Indices in the batch of the working samples.
        z : torch.Tensor of shape (n, *code_dims)
            Their codes.
        done : torch.Tensor of shape (n,)
            Whether each met the stopping rule (bool).
        energy, gap : torch.Tensor of shape (n,) or None
            Their energy and duality gap, where the check computed them.
        """
        self.z[rows] = z
        self.converged[rows] = done
        self.n_iter[rows] = iteration
        if energy is not None:
            self.energy[rows], self.gap[rows] = energy, gap

    def result(self, method: str) -> SolverResult:
        """The tensor :class:`SolverResult`, ``converged`` false wherever the energy or gap is
        not finite.

        Parameters
        ----------
        method : str
            The algorithm's name.

        Returns
        -------
        SolverResult
        """
        self.converged &= torch.isfinite(self.energy) & torch.isfinite(self.gap)
        return SolverResult(
            z=self.z, gap=self.gap, energy=self.energy, converged=self.converged,
            n_iter_per_sample=self.n_iter, n_iter=int(self.n_iter.max()) if self.z.shape[0] else 0,
            method=method)


class NotConvergedWarning(UserWarning):
    """Codes a method returned as optimal (or an energy as the minimum) that did not reach
    their tolerance within the iteration cap."""


__all__ = ["SolverResult", "IterationState", "Callback", "NotConvergedWarning"]
