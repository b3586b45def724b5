"""Parts of the conditional energy ``E(x, y, z) = C(y, Dec(h, z)) + λR(z)`` with ``h = Pred(x)``.

- :class:`SquaredError`: the default cost ``C(y, ŷ) = ½‖y − ŷ‖²`` per sample.
- :class:`LinearInZDecoder`: decoders ``Dec(h, z) = b(h) + A z`` that are linear in the latent.
  ``A`` is one of the library's :class:`~latentebm.operators.LinearOperator` (dense dictionary or
  convolution), so inference is the library's certified FISTA on the target ``y − b(h)``.
  :class:`ConditionalLinearDecoder` (dense ``W``) and :class:`ConditionalConvDecoder`
  (kernels) are the two instances.

Any other ``nn.Module`` whose ``forward(h, z)`` returns ``ŷ`` of the shape of ``y`` is a
general decoder; it must treat every sample of the batch independently.
"""

from __future__ import annotations

import abc
import functools
from typing import Any

import torch
from torch import nn

from .._docs import fill_doc
from .._validation import as_tensor, check_finite, check_int, check_seed
from ..operators import ConvDictionary, DenseDictionary, LinearOperator


class SquaredError:
    """``C(y, ŷ) = ½‖y − ŷ‖²`` summed over every non-batch dimension: shape ``(batch,)``."""

    name = "squared_error"

    def __call__(self, y: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        return 0.5 * (y - y_hat).pow(2).flatten(1).sum(1)

    def __repr__(self) -> str:
        return "SquaredError()"


@fill_doc
class LinearInZDecoder(nn.Module, abc.ABC):
    """``Dec(h, z) = b(h) + A z``: an offset from the predictor's output plus a linear operator.

    With no predictor (``h = None``) the offset is zero whatever ``offset`` says.

    Parameters
    ----------
    offset : "identity", None or nn.Module, default="identity"
        ``"identity"``: ``b(h) = h`` (``h`` has the shape of ``y``); ``None``: ``b = 0`` (the
        unconditional case); an ``nn.Module`` mapping ``h`` to the shape of ``y``.
    """

    def __init__(self, offset: Any = "identity") -> None:
        super().__init__()
        if isinstance(offset, nn.Module):
            self.offset_kind = "module"
            self.offset_net: nn.Module | None = offset
        elif offset is None or (isinstance(offset, str) and offset == "identity"):
            self.offset_kind = "identity" if offset else "none"
            self.offset_net = None
        else:
            raise TypeError(f"offset must be 'identity', None or an nn.Module, got {offset!r}")

    @abc.abstractmethod
    def atoms(self) -> torch.Tensor:
        """The parameter that ``A`` is built from (live, with gradient)."""

    @abc.abstractmethod
    def make_operator(self, atoms: torch.Tensor) -> LinearOperator:
        """The library operator over the given atoms tensor (used as is, not copied, not
        checked: :meth:`forward` builds it at every call).

        Parameters
        ----------
        atoms : torch.Tensor
            Atoms in the layout of :meth:`atoms` (``W`` or kernels).

        Returns
        -------
        LinearOperator
        """

    def operator(self) -> LinearOperator:
        """``A`` as a detached :class:`LinearOperator` snapshot (for the solvers), its atoms
        checked to be finite."""
        atoms = self.atoms().detach()
        check_finite(atoms, "the decoder's atoms")
        return self.make_operator(atoms)

    @property
    def n_atoms(self) -> int:
        return self.make_operator(self.atoms().detach()).n_atoms

    def offset(self, h: torch.Tensor | None) -> torch.Tensor | None:
        """``b(h)``, or ``None`` where it is zero.

        Parameters
        ----------
        {h_hidden}

        Returns
        -------
        torch.Tensor of the shape of ``y``, or None
        """
        if h is None or self.offset_kind == "none":
            return None
        if self.offset_net is not None:
            return self.offset_net(h)
        return h

    def forward(self, h: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
        """``ŷ = b(h) + A z`` (differentiable in the atoms and the offset module).

        Parameters
        ----------
        {h_hidden}
        z : torch.Tensor of shape (batch, *code_dims)
            Latent codes.

        {returns_signals}
        """
        y_hat = self.make_operator(self.atoms()).decode(z)
        b = self.offset(h)
        return y_hat if b is None else y_hat + b

    def code_shape(self, signal_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one latent for one signal of ``signal_shape`` (batch excluded).

        Parameters
        ----------
        {signal_shape_y}

        {returns_shape}
        """
        return self.operator().code_shape(tuple(signal_shape))

    @torch.no_grad()
    def normalize_(self) -> LinearInZDecoder:
        """Rescale the atoms to unit norm in place, so that ``λR(z)`` cannot be bypassed by
        scaling atoms up and codes down."""
        self.make_operator(self.atoms().data).normalize_()
        return self


class ConditionalLinearDecoder(LinearInZDecoder):
    """``Dec(h, z) = b(h) + W z`` with a dense ``W`` ``(n_features, n_atoms)``, unit-norm columns.

    Use :meth:`random` for Gaussian atoms.

    Parameters
    ----------
    W : array-like or torch.Tensor of shape (n_features, n_atoms)
        The initial atoms (copied).
    offset : "identity", None or nn.Module, default="identity"
        As in :class:`LinearInZDecoder`.
    normalize : bool, default=True
        Normalise the columns of ``W`` (which must then be non-zero).
    """

    def __init__(self, W: Any, *, offset: Any = "identity", normalize: bool = True) -> None:
        super().__init__(offset)
        W_t = as_tensor(W, "W", ndim=2).detach().clone()
        if normalize and bool((W_t == 0).all(0).any()):
            raise ValueError("W has an all-zero column; atoms must be non-zero")
        self.W = nn.Parameter(W_t)
        if normalize:
            self.normalize_()

    @classmethod
    def random(
        cls,
        n_features: int,
        n_atoms: int,
        *,
        offset: Any = "identity",
        seed: int = 0,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> ConditionalLinearDecoder:
        """Gaussian atoms drawn from ``seed`` (same seed, same atoms on every device).

        Parameters
        ----------
        n_features : int
            Signal dimension.
        n_atoms : int
            Number of atoms.
        offset : "identity", None or nn.Module, default="identity"
            As in :class:`LinearInZDecoder`.
        seed : int, default=0
            Seed of the draw (made on the CPU in float64).
        device : str, torch.device or None, default=None
            Device of the atoms.
        dtype : torch.dtype, default=torch.float32
            Dtype of the atoms.

        Returns
        -------
        ConditionalLinearDecoder
            With unit-norm columns.
        """
        n_features = check_int(n_features, "n_features", low=1)
        n_atoms = check_int(n_atoms, "n_atoms", low=1)
        gen = torch.Generator().manual_seed(check_seed(seed))
        W = torch.randn(n_features, n_atoms, generator=gen, dtype=torch.float64)
        return cls(W.to(device=device, dtype=dtype), offset=offset)

    def atoms(self) -> torch.Tensor:
        return self.W

    def make_operator(self, atoms: torch.Tensor) -> DenseDictionary:
        """A :class:`~latentebm.operators.DenseDictionary` over ``atoms`` (not copied).

        Parameters
        ----------
        atoms : torch.Tensor of shape (n_features, n_atoms)
            The dictionary.

        Returns
        -------
        DenseDictionary
        """
        return DenseDictionary(atoms, check_input=False)


class ConditionalConvDecoder(LinearInZDecoder):
    """``Dec(h, z) = b(h) + Σ_i K_i * z_i`` with kernels ``(n_atoms, channels, kh, kw)``.

    Signals are images ``(batch, channels, H, W)``, latents code maps.

    Parameters
    ----------
    kernels : array-like or torch.Tensor of shape (n_atoms, channels, kh, kw)
        The initial kernels (copied).
    boundary : {"full", "circular"}, default="full"
        As in :class:`~latentebm.operators.ConvDictionary`.
    offset : "identity", None or nn.Module, default="identity"
        As in :class:`LinearInZDecoder`.
    normalize : bool, default=True
        Normalise the kernels to unit norm (they must then be non-zero).
    """

    def __init__(self, kernels: Any, *, boundary: str = "full", offset: Any = "identity",
                 normalize: bool = True) -> None:
        super().__init__(offset)
        K = as_tensor(kernels, "kernels", ndim=4).detach().clone()
        ConvDictionary(K, boundary=boundary)  # validates ``boundary``
        if normalize and bool((K.flatten(1) == 0).all(1).any()):
            raise ValueError("kernels has an all-zero kernel; kernels must be non-zero")
        self.boundary = boundary
        self.kernels = nn.Parameter(K)
        if normalize:
            self.normalize_()

    def atoms(self) -> torch.Tensor:
        return self.kernels

    def make_operator(self, atoms: torch.Tensor) -> ConvDictionary:
        """A :class:`~latentebm.operators.ConvDictionary` over ``atoms`` (not copied).

        Parameters
        ----------
        atoms : torch.Tensor of shape (n_atoms, channels, kh, kw)
            The kernels.

        Returns
        -------
        ConvDictionary
        """
        return ConvDictionary(atoms, boundary=self.boundary, check_input=False)


@functools.singledispatch
def decoder_for(op: LinearOperator, offset: Any = None) -> LinearInZDecoder:
    """The linear-in-z decoder over a copy of ``op``'s atoms (not renormalised).

    Dispatches on the operator's class; a new operator registers its decoder with
    ``@decoder_for.register``.

    Parameters
    ----------
    op : DenseDictionary or ConvDictionary
        ``W`` ``(n_features, n_atoms)`` or kernels ``(n_atoms, channels, kh, kw)``.
    offset : ``"identity"``, None or nn.Module
        As in :class:`LinearInZDecoder`.

    Returns
    -------
    LinearInZDecoder
    """
    raise TypeError(f"no decoder for a {type(op).__name__} operator")


@decoder_for.register
def _dense_decoder(op: DenseDictionary, offset: Any = None) -> LinearInZDecoder:
    return ConditionalLinearDecoder(op.W.detach(), offset=offset, normalize=False)


@decoder_for.register
def _conv_decoder(op: ConvDictionary, offset: Any = None) -> LinearInZDecoder:
    return ConditionalConvDecoder(op.kernels.detach(), boundary=op.boundary, offset=offset,
                                  normalize=False)


__all__ = [
    "decoder_for",
    "SquaredError",
    "LinearInZDecoder",
    "ConditionalLinearDecoder",
    "ConditionalConvDecoder",
]
