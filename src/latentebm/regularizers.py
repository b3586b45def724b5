"""Regularizers ``R(z)``: value, proximal operator and the dual norm used by the gap certificate.

Codes are batch-first; ``value`` and ``dual_norm`` reduce every non-batch dimension and return
shape ``(batch,)``. ``prox(v, tau)`` solves ``argmin_z ½‖z − v‖² + tau·R(z)`` with ``tau`` a
float, a 0-dim tensor, or a tensor broadcastable against ``v``.
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F

from ._docs import DOCS, doc_filler, fill_doc
from ._validation import check_int

# What an implementation's value, prox and dual_norm take and return (the Parameters entries and
# the Returns section), documented once for the classes below.
_fill_method_doc = doc_filler({
    "value_method": DOCS["z_codes"] + "\n\n" + DOCS["returns_per_sample"],
    "prox_method": DOCS["prox_v"] + "\n" + DOCS["prox_tau"] + "\n\n" + DOCS["returns_like_v"],
    "dual_norm_method": DOCS["c_code_shaped"] + "\n\n" + DOCS["returns_per_sample"],
})


@fill_doc
def soft_threshold(v: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
    """``shrink_τ(v) = sign(v)·max(|v| − τ, 0)``, computed as ``v − clip(v, −τ, τ)``.

    A single threshold known on the host (a number, or a 0-dim CPU tensor: reading it costs no
    device synchronisation) and not being learned goes through the fused ``softshrink`` kernel,
    one pass over ``v`` with the same arithmetic, and so does a CPU threshold per sample
    ``(batch, 1, ..., 1)`` of large samples outside autograd, one sample at a time (ADMM's
    per-image penalty: 1.4 ms against 4.4 ms for ``clamp`` on 10 x 32 x 128 x 128 float64
    codes); learned or accelerator-held thresholds go through ``clamp`` with tensor bounds.

    Parameters
    ----------
    v : torch.Tensor of shape (batch, *code_dims)
        Values to shrink.
    {prox_tau}

    {returns_like_v}
        The soft-thresholded values.
    """
    if isinstance(tau, torch.Tensor):
        if (tau.dim() == 0 and tau.device.type == "cpu" and not tau.requires_grad
                and v.is_floating_point()):
            return F.softshrink(v, float(tau))
        if _per_sample_on_host(v, tau):
            out = torch.empty_like(v)
            for i, tau_i in enumerate(tau.flatten().tolist()):
                torch.ops.aten.softshrink.out(v[i], tau_i, out=out[i])
            return out
        return v - torch.clamp(v, min=-tau, max=tau)
    return F.softshrink(v, float(tau)) if v.is_floating_point() else \
        v - torch.clamp(v, min=-float(tau), max=float(tau))


LOOP_MIN_SAMPLE_SIZE = 32768
"""Entries per sample from which a per-sample threshold is applied sample by sample (below it,
the Python loop would cost more than ``clamp``'s extra passes: dense codes of 256 atoms)."""


def _per_sample_on_host(v: torch.Tensor, tau: torch.Tensor) -> bool:
    """Whether ``tau`` is one CPU number per large sample of the CPU batch ``v``, outside
    autograd and compilation (where ``softshrink``'s ``out=`` form cannot go)."""
    return (v.device.type == "cpu" and tau.device.type == "cpu" and v.is_floating_point()
            and v.dim() > 1 and v.shape[0] > 0 and v[0].numel() >= LOOP_MIN_SAMPLE_SIZE
            and tau.dim() == v.dim() and tau.shape[0] == v.shape[0] and tau.numel() == v.shape[0]
            and not (torch.is_grad_enabled() and (v.requires_grad or tau.requires_grad))
            and not torch.compiler.is_compiling())


@fill_doc
class Regularizer(abc.ABC):
    """A convex, positively homogeneous penalty ``R`` (a gauge), so the Lasso-type duality gap
    ``½(1−u)²‖r‖² + λR(z) − u⟨z, Aᵀr⟩`` with ``u = λ / max(λ, R°(Aᵀr))`` certifies optimality,
    where ``R°`` is :meth:`dual_norm`.

    Solvers read a regularizer's structure from its attributes, never from its type:
    ``is_l1`` (an L1 penalty, possibly one-sided: exact active-set finishes and coordinate
    descent apply), ``nonneg`` (codes constrained to ``z ≥ 0``) and ``is_constraint`` (the
    indicator of a set, not a penalty: ``λ`` does not weigh it, and the gap is
    ``σ(Aᵀr) − ⟨z, Aᵀr⟩`` with ``σ`` the set's support function, :meth:`dual_norm`).
    """

    name: str = "regularizer"
    is_l1: bool = False
    nonneg: bool = False
    is_constraint: bool = False

    def check_code_shape(self, code_shape: tuple[int, ...]) -> None:  # noqa: B027 - a hook
        """Refuse codes of one sample ``code_shape`` this penalty cannot apply to (a
        ``ValueError``); every shape by default.

        Parameters
        ----------
        code_shape : tuple of int
            The shape of one sample's codes.
        """

    @abc.abstractmethod
    def value(self, z: torch.Tensor) -> torch.Tensor:
        """``R(z)`` for each sample.

        Parameters
        ----------
        {z_codes}

        {returns_per_sample}
            The penalty of each sample (``+inf`` outside the domain).
        """

    @abc.abstractmethod
    def prox(self, v: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
        """The proximal operator ``argmin_z ½‖z − v‖² + tau·R(z)``.

        Parameters
        ----------
        {prox_v}
        tau : float or torch.Tensor
            Step: a number, a 0-dim tensor, or a tensor broadcastable against ``v``.

        {returns_like_v}
        """

    @abc.abstractmethod
    def dual_norm(self, c: torch.Tensor) -> torch.Tensor:
        """The dual norm ``R°(c)`` used by the gap certificate.

        Parameters
        ----------
        c : torch.Tensor of shape (batch, *code_dims)
            Code-shaped tensor, typically ``Aᵀr``.

        {returns_per_sample}
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@_fill_method_doc
class L1(Regularizer):
    """``R(z) = ‖z‖₁``."""

    name = "l1"
    is_l1 = True

    def value(self, z: torch.Tensor) -> torch.Tensor:
        """``‖z‖₁`` of each sample.

        Parameters
        ----------
        {value_method}
        """
        return z.abs().flatten(1).sum(1)

    def prox(self, v: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
        """Soft thresholding at ``tau``.

        Parameters
        ----------
        {prox_method}
        """
        return soft_threshold(v, tau)

    def dual_norm(self, c: torch.Tensor) -> torch.Tensor:
        """``‖c‖∞`` of each sample.

        Parameters
        ----------
        {dual_norm_method}
        """
        return c.abs().flatten(1).amax(1)


@_fill_method_doc
class NonNegL1(Regularizer):
    """``R(z) = Σ z`` on ``z ≥ 0`` (+∞ elsewhere): the non-negative Lasso."""

    name = "nonneg_l1"
    is_l1 = True
    nonneg = True

    def value(self, z: torch.Tensor) -> torch.Tensor:
        """``Σ z`` of each sample (the domain ``z ≥ 0`` is not checked).

        Parameters
        ----------
        {value_method}
        """
        return z.flatten(1).sum(1)

    def prox(self, v: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
        """One-sided soft thresholding ``max(v − tau, 0)``.

        Parameters
        ----------
        {prox_method}
        """
        return torch.clamp(v - tau, min=0)

    def dual_norm(self, c: torch.Tensor) -> torch.Tensor:
        """``max(max c, 0)`` of each sample.

        Parameters
        ----------
        {dual_norm_method}
        """
        return c.flatten(1).amax(1).clamp_min(0)


@fill_doc
class UnitBall(Regularizer):
    """The indicator of ``‖z_i‖₂ ≤ 1`` for each atom ``z_i``: a constraint, not a penalty.

    The atoms are the slices over the last ``atom_ndim`` dimensions (a dictionary's kernels
    ``(n_atoms, C, k, k)`` with ``atom_ndim=3``, or a batch of them with a leading dimension).
    ``prox`` is the projection onto the balls whatever ``tau``; ``value`` is 0 inside and
    +∞ outside (per leading sample); ``dual_norm`` is the support function ``Σ_i ‖c_i‖₂``.

    Parameters
    ----------
    atom_ndim : int
        Number of trailing dimensions that make up one atom.
    """

    name = "unit_ball"
    is_constraint = True

    def __init__(self, atom_ndim: int = 1) -> None:
        self.atom_ndim = check_int(atom_ndim, "atom_ndim", low=1)

    def check_code_shape(self, code_shape: tuple[int, ...]) -> None:
        """Refuse codes of one sample ``code_shape`` with fewer dimensions than an atom."""
        if len(code_shape) < self.atom_ndim:
            raise ValueError(f"UnitBall(atom_ndim={self.atom_ndim}) needs codes of at least "
                             f"{self.atom_ndim} dimension(s) per sample, got {code_shape}")

    def _norms(self, z: torch.Tensor) -> torch.Tensor:
        return z.flatten(z.dim() - self.atom_ndim).norm(dim=-1)

    def value(self, z: torch.Tensor) -> torch.Tensor:
        """0 where every atom of a sample lies in its unit ball, ``+inf`` otherwise.

        Parameters
        ----------
        z : torch.Tensor of shape (batch, ..., *atom_dims)
            Atoms, batch-first; the last ``atom_ndim`` dimensions make up one atom.

        {returns_per_sample}
        """
        norms = self._norms(z).reshape(z.shape[0], -1)  # (batch,) when a sample is one atom
        outside = (norms > 1 + 8 * torch.finfo(z.dtype).eps).any(1)
        zero = z.new_zeros(z.shape[0])
        return torch.where(outside, torch.full_like(zero, float("inf")), zero)

    def prox(self, v: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
        """Project each atom onto the unit ball (``tau`` is ignored).

        Parameters
        ----------
        v : torch.Tensor of shape (..., *atom_dims)
            Atoms; the last ``atom_ndim`` dimensions make up one atom.
        tau : float or torch.Tensor
            Unused.

        {returns_like_v}
        """
        scale = self._norms(v).clamp_min(1.0)
        return v / scale.reshape(*scale.shape, *([1] * self.atom_ndim))

    def dual_norm(self, c: torch.Tensor) -> torch.Tensor:
        """The support function ``Σ_i ‖c_i‖₂`` of each sample.

        Parameters
        ----------
        c : torch.Tensor of shape (batch, ..., *atom_dims)
            Atom-shaped tensor, batch-first.

        {returns_per_sample}
        """
        return self._norms(c).reshape(c.shape[0], -1).sum(1)

    def __repr__(self) -> str:
        return f"UnitBall(atom_ndim={self.atom_ndim})"


REGULARIZERS: dict[str, type[Regularizer]] = {"l1": L1, "nonneg_l1": NonNegL1}
"""The penalties that can be named by a string (in configs, the CLI and checkpoints)."""


def get_regularizer(spec: Regularizer | str | bool) -> Regularizer:
    """The one regularizer factory.

    Parameters
    ----------
    spec : Regularizer, str or bool
        An instance (returned as is), a name from :data:`REGULARIZERS`, or a bool meaning
        ``nonneg`` (``True``: :class:`NonNegL1`, ``False``: :class:`L1`).
    """
    if isinstance(spec, Regularizer):
        return spec
    if isinstance(spec, bool):
        return NonNegL1() if spec else L1()
    if isinstance(spec, str) and spec in REGULARIZERS:
        return REGULARIZERS[spec]()
    if isinstance(spec, str):
        raise ValueError(f"unknown regularizer {spec!r}; the names are {sorted(REGULARIZERS)}")
    raise TypeError(
        f"regularizer must be a Regularizer or one of {sorted(REGULARIZERS)}, got {spec!r}"
    )
