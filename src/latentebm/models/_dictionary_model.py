"""What the two dictionary-learning models share: inference over a fixed linear decoder.

:class:`~latentebm.models.SparseCoding` (a dense dictionary) and
:class:`~latentebm.models.ConvDictionaryLearning` (a bank of convolution kernels) have the same
energy, ``E(y, z) = ½‖y − A z‖² + λ R(z)`` with ``R`` the L1 norm (non-negative with
``nonneg``), and differ only in the operator ``A`` and in how the atoms are learned.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch

from .._docs import fill_doc
from ..objective import lasso_energy
from ..operators import LinearOperator
from ..problem import Problem, to_output
from ..regularizers import Regularizer, get_regularizer
from ..solvers import SolverResult, solve
from ..solvers.api import check_method_name, resolve_method
from ..training.fit_options import FitOptions
from ._base import LatentModel, finite_result


@fill_doc
class DictionaryModel(LatentModel):
    """Inference, decoding and energy of a model whose decoder is the operator ``A``.

    Subclasses define :meth:`dictionary`, :meth:`operator`, ``_init_atoms_from`` (atoms drawn
    from the training signals, for ``init="data"``), ``SIGNAL_NDIM`` (the rank of a batch of
    signals: 2 for vectors, 4 for images) and the config fields ``lam`` and ``nonneg``.
    """

    SIGNAL_NDIM: ClassVar[int] = 2

    @abc.abstractmethod
    def dictionary(self) -> torch.Tensor:
        """The atoms, detached."""

    @abc.abstractmethod
    def operator(self) -> LinearOperator:
        """The atoms as the solvers' operator (a view, not a copy)."""

    @abc.abstractmethod
    def _init_atoms_from(self, Y: torch.Tensor) -> None:
        """Draw the atoms from the training signals ``Y`` and clear the ``init="data"`` flag."""

    def start_fit(
        self,
        Y: Any,
        fit_args: dict[str, Any],
        options: FitOptions,
        *,
        codes_shape: tuple[int, ...] | None,
    ) -> tuple[torch.Tensor | None, tuple[int, int]]:
        """The warm-start codes and the ``(epoch, batch)`` position a ``fit`` starts from.

        A resumed run restores both from ``options.checkpoint`` (see :meth:`resume_from`);
        otherwise the codes are zeros and a model built with ``init="data"`` draws its atoms
        from ``Y`` at its first step.

        Parameters
        ----------
        Y : torch.Tensor or ShardedArray of shape (n, *signal_shape)
            The validated training signals.
        fit_args : dict
            The ``fit`` arguments a resumed run must repeat.
        options : FitOptions
            The ``fit``'s options (whether to resume, and from which checkpoint).
        codes_shape : tuple of int or None
            ``(n, *code_shape)``, the codes kept to warm-start the coding step; ``None`` keeps
            none.

        Returns
        -------
        codes : torch.Tensor of shape codes_shape, or None
        start : tuple of int
        """
        codes = (None if codes_shape is None
                 else torch.zeros(codes_shape, device=self.device, dtype=self.dtype))
        if options.resuming:
            state = self.resume_from(options.checkpoint, fit_args)
            if codes is not None:
                if "codes" not in state.extra:
                    raise ValueError(
                        f"checkpoint {options.checkpoint} holds no warm-start codes (a streamed "
                        "fit, or one without warm start, wrote it): resume it the same way, or "
                        "start again")
                codes = state.extra["codes"].to(codes.dtype)
            return codes, state.position
        if self._init_from_data and self.n_steps_ == 0:
            self._init_atoms_from(Y)
        return codes, (0, 0)

    def regularizer(self) -> Regularizer:
        """``R``: L1, or non-negative L1 with ``nonneg``."""
        return get_regularizer(self.nonneg)

    def coding_method(self, method: str, signal_shape: tuple[int, ...]) -> str:
        """The registered name of the solver ``method`` picks (``"auto"`` resolved) for signals
        of ``signal_shape`` on this model's operator; ``ValueError`` for an unknown name or one
        that cannot solve the problem.

        Parameters
        ----------
        method : str
            ``"auto"`` or a name :func:`latentebm.solve` takes.
        signal_shape : tuple of int
            One signal's shape (without the batch dimension).

        Returns
        -------
        str
        """
        probe = Problem(torch.empty((0, *signal_shape), dtype=self.dtype, device=self.device),
                        self.operator(), self.lam, numpy_out=False)
        return resolve_method(check_method_name(method), probe, self.regularizer()).name

    def encode(
        self, Y: Any, *, tol: float | None = None, max_iter: int = 1000, z0: Any = None,
        method: str = "auto",
    ) -> SolverResult:
        """Optimal codes of the signals ``Y``, with their certificate.

        Parameters
        ----------
        Y : array or tensor ``(batch, *signal_shape)``
            ``(batch, n_features)`` for a dense dictionary, ``(batch, channels, H, W)`` for
            kernels.
        tol : float, optional
            Relative duality gap (default 1e-5 in float32, 1e-8 in float64).
        {max_iter_cap}
        z0 : array or tensor ``(batch, *code_shape)``, optional
            Warm start.
        method : str, default="auto"
            The solver, as :func:`latentebm.solve` takes it; ``"auto"`` chooses by the
            operator's structure (a dense dictionary on the CPU: the compiled ``"gram_cd"``;
            kernels with circular boundaries: ``"admm"``; otherwise FISTA).

        Returns
        -------
        SolverResult
            Codes ``z`` ``(batch, *code_shape)``, energies, gaps and the method that ran (see
            :func:`latentebm.solve`).
        """
        if isinstance(Y, torch.Tensor):
            self.check_input(Y, "Y", ndim=self.SIGNAL_NDIM)
        return solve(Y, self.operator(), self.lam, method=method, tol=tol, max_iter=max_iter,
                     z0=z0, nonneg=self.nonneg)

    def forward(self, Y: torch.Tensor, z0: torch.Tensor | None = None, *, tol: float = 1e-3,
                max_iter: int = 200, method: str = "fista", **options: Any) -> SolverResult:
        """The output of the solver ``method`` (a name registered with
        :func:`~latentebm.solvers.register_method`, or ``"auto"``, with that method's
        ``options``) for validated signals ``Y`` ``(batch, *signal_shape)``, warm-started from
        ``z0``; no checks, no gradient."""
        problem = Problem(Y, self.operator(), self.lam, numpy_out=False)
        reg = self.regularizer()
        if Y.shape[0] == 0:  # a process's empty share of a small last batch (FFTs refuse it)
            return _no_codes(problem)
        with torch.no_grad():
            return resolve_method(method, problem, reg).run(problem, reg, z0, tol=tol,
                                                            max_iter=max_iter, callback=None,
                                                            **options)

    def decode(self, Z: Any) -> Any:
        """The signals ``A z`` of codes ``Z``, without gradient.

        Parameters
        ----------
        Z : array-like or torch.Tensor of shape (batch, *code_shape)
            Codes (``(batch, n_atoms)`` dense, ``(batch, n_atoms, H', W')`` convolutional).

        Returns
        -------
        numpy.ndarray or torch.Tensor of shape (batch, *signal_shape)
            A NumPy array when ``Z`` is not a tensor.
        """
        Z_t, numpy_out = self.check_input(Z, "Z", ndim=self.SIGNAL_NDIM)
        op = self.operator()
        op.check_code(Z_t, "Z")
        return to_output(finite_result(op.decode(Z_t), "decoded signals"), numpy_out)

    def energy(self, Y: Any, Z: Any | None = None) -> Any:
        """Per-sample energy ``(batch,)``; with ``Z=None``, the free energy ``min_z E(y, z)``.

        Parameters
        ----------
        Y : array or tensor ``(batch, *signal_shape)``
            Signals.
        Z : array or tensor ``(batch, *code_shape)``, optional
            Codes.

        Returns
        -------
        array or tensor ``(batch,)``
        """
        if Z is None:
            return self.encode(Y).warn_unless_converged("free energies").energy
        return lasso_energy(Y, self.operator(), Z, self.lam, nonneg=self.nonneg)


def _no_codes(problem: Problem) -> SolverResult:
    """The result of coding no signals: empty tensors of the problem's code shape."""
    Y = problem.Y
    empty = Y.new_zeros(0)
    return SolverResult(
        z=Y.new_zeros((0, *problem.op.code_shape(tuple(Y.shape[1:])))), gap=empty,
        energy=empty, converged=torch.zeros(0, dtype=torch.bool, device=Y.device),
        n_iter_per_sample=torch.zeros(0, dtype=torch.long, device=Y.device), n_iter=0)


__all__ = ["DictionaryModel"]
