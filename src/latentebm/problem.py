"""Turn user arguments (arrays, tensors, operators) into one validated problem on one device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._docs import fill_doc
from ._validation import as_tensor, check_lam, check_same_device_dtype
from .operators import DenseDictionary, LinearOperator


@dataclass
class Problem:
    """``Y`` (batch, *signal_dims) and ``op`` on the same device and dtype; ``numpy_out`` says
    whether results go back to the caller as NumPy arrays."""

    Y: torch.Tensor
    op: LinearOperator
    lam: float
    numpy_out: bool


def as_operator(W: Any, *, like: torch.Tensor | None = None) -> LinearOperator:
    """An operator from an operator, a tensor or an array (NumPy ``W`` follows ``like``).

    Parameters
    ----------
    W : LinearOperator, torch.Tensor or array-like of shape (n_features, n_atoms)
        An operator (returned as is), or a dense dictionary.
    like : torch.Tensor, optional
        Tensor whose device and dtype a NumPy ``W`` is converted to.

    Returns
    -------
    LinearOperator
        ``W`` itself, or a :class:`~latentebm.operators.DenseDictionary` around it.
    """
    if isinstance(W, LinearOperator):
        W.drop_caches_if_changed()  # its caches may describe atoms changed behind its back
        return W
    if isinstance(W, torch.Tensor):
        return DenseDictionary(W)
    W_t = as_tensor(W, "W", ndim=2)
    if like is not None:
        W_t = W_t.to(device=like.device, dtype=like.dtype)
    return DenseDictionary(W_t)


def prepare(Y: Any, W: Any, lam: Any, *, signal_ndim: int | tuple[int, ...] = (2, 4)) -> Problem:
    """Validate ``Y``, ``W`` and ``lam`` together.

    NumPy ``Y`` with a tensor or operator ``W`` is moved to ``W``'s device and dtype; a tensor
    ``Y`` must already match them (no silent transfers between devices or precisions). With
    two NumPy arrays ``W`` takes ``Y``'s precision, as scikit-learn's transformers keep ``X``'s
    dtype (integer ``Y`` takes a float64 ``W``'s).

    Parameters
    ----------
    Y : array-like or torch.Tensor of shape (batch, *signal_dims)
        Signals: ``(batch, n_features)`` or images ``(batch, channels, H, W)``.
    W : LinearOperator, torch.Tensor or array-like of shape (n_features, n_atoms)
        The decoder.
    lam : float
        Penalty weight, checked to be a non-negative finite number.
    signal_ndim : int or tuple of int, default=(2, 4)
        Allowed ranks of ``Y`` (batch dimension included).

    Returns
    -------
    Problem
        ``Y`` and the operator on one device and dtype, ``lam`` as a float, and whether ``Y``
        was not a tensor (results then go back as NumPy arrays).
    """
    lam = check_lam(lam)
    numpy_out = not isinstance(Y, torch.Tensor)
    Y_t = as_tensor(Y, "Y", ndim=signal_ndim)
    if isinstance(W, (LinearOperator, torch.Tensor)):
        op = as_operator(W)
        if numpy_out:
            Y_t = Y_t.to(device=op.device, dtype=op.dtype)
        elif isinstance(W, torch.Tensor):
            as_tensor(W, "W", ndim=2)
    else:
        if numpy_out and np.asarray(Y).dtype.kind in "biu" and (
                np.asarray(W).dtype == np.float64):
            Y_t = Y_t.double()  # integer signals take the float64 atoms' precision
        op = as_operator(W, like=Y_t)
    check_same_device_dtype(Y_t, "Y", W=_probe(op))
    op.check_signal(Y_t, "Y")
    check_signal_scale(Y_t)
    return Problem(Y=Y_t, op=op, lam=lam, numpy_out=numpy_out)


def check_signal_scale(Y: torch.Tensor) -> None:
    """Refuse signals ``Y`` ``(batch, ...)`` whose squared norms are not normal numbers of
    their dtype: so small that every energy and gap rounds to zero (any code would pass as
    converged), or so large that they overflow (energies, gaps and training losses would be
    infinite, and a model's atoms learned from them NaN).

    Parameters
    ----------
    Y : torch.Tensor of shape (batch, *signal_dims)
        Finite signals.

    Raises
    ------
    FloatingPointError
        Naming how many signals are out of range and how to fix it.
    """
    # ‖y‖² < tiny ⟺ ‖y‖ < √tiny and ‖y‖² > max ⟺ ‖y‖ > √max, whether or not the norm itself
    # under- or overflows (one fast pass; (Y * Y).sum(1) took 23 ms on B1's 10 000 digits, a
    # tenth of the solve)
    info = torch.finfo(Y.dtype)
    norms = torch.linalg.vector_norm(Y.flatten(1), dim=1)
    small, large = norms < info.tiny ** 0.5, norms > info.max ** 0.5
    if not bool((small | large).any()):
        return
    dtype = str(Y.dtype).replace("torch.", "")
    if bool(large.any()):
        wider = "" if Y.dtype == torch.float64 else ", or use float64"
        raise FloatingPointError(
            f"Y: {int(large.sum())} signal(s) are too large for {dtype} (their squared norms "
            f"overflow, so energies and duality gaps would be infinite); rescale Y and λ "
            f"together{wider}")
    bad = small & (Y.flatten(1) != 0).any(1)
    if bool(bad.any()):
        raise FloatingPointError(
            f"Y: {int(bad.sum())} signal(s) are too small for {dtype} (their squared norms "
            "underflow, so energies and duality gaps would read zero); rescale Y and λ "
            "together")


@fill_doc
def prepare_code(Z: Any, name: str, problem: Problem) -> torch.Tensor:
    """Validate a code (``z0`` or ``Z``) against the problem's shapes, device and dtype.

    A tensor must already be on the problem's device and dtype; an array is converted.

    Parameters
    ----------
    Z : array-like or torch.Tensor of shape (batch, *code_dims)
        The code.
    name : str
        Name of the argument, used in error messages.
    problem : Problem
        The problem from :func:`prepare`.

    {returns_code_shaped}
    """
    expected = (problem.Y.shape[0], *problem.op.code_shape(tuple(problem.Y.shape[1:])))
    if isinstance(Z, torch.Tensor):
        Z_t = as_tensor(Z, name)
        check_same_device_dtype(problem.Y, "Y", **{name: Z_t})
    else:
        Z_t = as_tensor(Z, name).to(device=problem.Y.device, dtype=problem.Y.dtype)
    if tuple(Z_t.shape) != expected:
        raise ValueError(f"{name} must have shape {expected}, got {tuple(Z_t.shape)}")
    return Z_t


def to_output(t: Any, numpy_out: bool) -> Any:
    """``t`` as a NumPy array when ``numpy_out`` and ``t`` is a tensor, else unchanged.

    Parameters
    ----------
    t : Any
        A result (tensors of any shape, or anything else).
    numpy_out : bool
        Whether the caller passed NumPy input.

    Returns
    -------
    numpy.ndarray or Any
        ``t`` detached and copied to the CPU as an array, or ``t`` itself.
    """
    if numpy_out and isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy()
    return t


def _probe(op: LinearOperator) -> torch.Tensor:
    return torch.empty(0, device=op.device, dtype=op.dtype)


__all__ = ["Problem", "prepare", "prepare_code", "as_operator", "check_signal_scale", "to_output"]
