"""The linear decoder interface shared by every solver: ``y = A z``."""

from __future__ import annotations

import abc

import torch

from .._docs import fill_doc
from .._validation import check_int


@fill_doc
def batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner product over every non-batch dimension.

    Parameters
    ----------
    a : torch.Tensor of shape (batch, *dims)
        First operand.
    b : torch.Tensor of shape (batch, *dims)
        Second operand, with as many elements per sample as ``a``.

    {returns_per_sample}
        ``⟨a_i, b_i⟩`` for each sample ``i``.
    """
    return torch.linalg.vecdot(a.flatten(1), b.flatten(1))


def unit_norm(w: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """``w / ‖w‖`` (over ``dim``, or the whole tensor); zero stays zero.

    The norm squares the entries, which overflows (or underflows) long before ``w`` does:
    where it is not a normal number, ``w`` is first divided by its largest entry (chosen on
    the device, no host synchronisation; the plain quotient otherwise, to the bit).

    Parameters
    ----------
    w : torch.Tensor
        Any shape.
    dim : int or None
        The dimension to normalise along (e.g. 0: each column), or None: the whole tensor.

    Returns
    -------
    torch.Tensor
        Shaped like ``w``.
    """
    finfo = torch.finfo(w.dtype)
    dims = () if dim is None else (dim,)
    norm = torch.linalg.vector_norm(w, dim=dims or None, keepdim=True)
    scaled = w / w.abs().amax(dim=dims or None, keepdim=True).clamp_min(finfo.tiny)
    ok = torch.isfinite(norm) & (norm >= finfo.tiny ** 0.5)
    scaled_norm = torch.linalg.vector_norm(scaled, dim=dims or None, keepdim=True)
    return torch.where(ok, w / norm.clamp_min(finfo.tiny),
                       scaled / scaled_norm.clamp_min(finfo.tiny))


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a ``(batch,)`` tensor so it broadcasts against ``like`` (batch-first).

    Parameters
    ----------
    v : torch.Tensor of shape (batch,)
        One value per sample.
    like : torch.Tensor of shape (batch, *dims)
        Tensor whose number of dimensions to match.

    Returns
    -------
    torch.Tensor of shape (batch, 1, ..., 1)
        A view of ``v`` with ``like.dim()`` dimensions.
    """
    return v.reshape(v.shape[0], *([1] * (like.dim() - 1)))


@fill_doc
class LinearOperator(abc.ABC):
    """A linear decoder ``A`` with its adjoint.

    Signals are batch-first ``(batch, *signal_dims)``, codes ``(batch, *code_dims)``.
    An operator uses its atoms tensor as is; its caches (Gram matrix, Lipschitz constant,
    spectra) are dropped by :meth:`normalize_`, by :meth:`invalidate`, when the tensor has
    changed in place since they were computed (its version counter), and, at every public
    solve, when the atoms' content no longer matches (:meth:`drop_caches_if_changed`: writes
    through a NumPy array that shares the memory, ``.data`` or inference mode leave the counter
    alone), so a cache never describes other atoms than those :meth:`decode` uses.
    """

    def __init__(self) -> None:
        self._lipschitz_cache: dict[tuple[int, ...], torch.Tensor] = {}
        self._atoms_stamp: tuple[int, int | None] | None = None
        self._content_stamp: torch.Tensor | None = None

    def drop_caches_if_changed(self) -> None:
        """:meth:`invalidate` when the atoms' values changed since the last call, by a
        fingerprint of them (one pass over the atoms and one host synchronisation: for entry
        points, not iterations)."""
        atoms = self.atoms.detach().flatten()
        if atoms.device.type == "meta":  # no values: refused where the solve checks its input
            return
        weights = torch.arange(atoms.numel(), device=atoms.device).remainder(97).add(97)
        stamp = torch.stack([(atoms.double() * weights).sum(), atoms.double().square().sum()])
        if self._content_stamp is None or not torch.equal(stamp, self._content_stamp):
            self.invalidate()
            self._content_stamp = stamp

    def _drop_stale_caches(self) -> None:
        """:meth:`invalidate` when the atoms changed since the caches were computed (an
        in-place change to the tensor, or another tensor); every cached getter calls it."""
        atoms = self.atoms
        try:
            version: int | None = atoms._version
        except RuntimeError:  # an inference-mode tensor keeps no version counter
            version = None
        stamp = (id(atoms), version)
        if stamp != self._atoms_stamp:
            self.invalidate()
            self._atoms_stamp = stamp

    @property
    @abc.abstractmethod
    def atoms(self) -> torch.Tensor:
        """The tensor that holds the atoms (a dense matrix, a kernel bank)."""

    @property
    def dtype(self) -> torch.dtype:
        return self.atoms.dtype

    @property
    def device(self) -> torch.device:
        return self.atoms.device

    atom_axis: int = 0
    """The axis of :attr:`atoms` that indexes the atoms."""

    @property
    def n_atoms(self) -> int:
        return self.atoms.shape[self.atom_axis]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """A copy of this operator on another device or in another precision.

        Parameters
        ----------
        device : torch.device or str, optional
            Target device; ``None`` keeps the current one.
        dtype : torch.dtype, optional
            Target dtype; ``None`` keeps the current one.

        Returns
        -------
        LinearOperator
            A new operator of the same type and settings (the same atoms tensor where nothing
            changes).
        """
        return self._like(self.atoms.to(device=device, dtype=dtype))

    def scaled(self, factor: float) -> LinearOperator:
        """This operator with every atom multiplied by ``factor``.

        Parameters
        ----------
        factor : float
            The factor (codes ``z / factor`` give the same signals).

        Returns
        -------
        LinearOperator
            A new operator of the same type and settings.
        """
        return self._like(self.atoms * factor)

    @abc.abstractmethod
    def _like(self, atoms: torch.Tensor) -> LinearOperator:
        """An operator like this one with the atoms ``atoms`` (what :meth:`to` returns)."""

    @abc.abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``A z``: codes to signals.

        Parameters
        ----------
        {z_codes}

        {returns_signals}
            Decoded signals.
        """

    @abc.abstractmethod
    def adjoint(self, r: torch.Tensor) -> torch.Tensor:
        """``Aᵀ r``: signals to code-shaped tensors.

        Parameters
        ----------
        r : torch.Tensor of shape (batch, *signal_dims)
            Signal-shaped tensor (typically a residual).

        {returns_code_shaped}
        """

    @abc.abstractmethod
    def code_shape(self, signal_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the code of one signal of shape ``signal_shape`` (batch dim excluded).

        Parameters
        ----------
        signal_shape : tuple of int
            Shape of one signal, ``signal_dims``, without the batch dimension.

        {returns_shape}
            ``code_dims``, without the batch dimension.
        """

    @abc.abstractmethod
    def check_signal(self, y: torch.Tensor, name: str = "Y") -> None:
        """Raise ``ValueError`` naming ``name`` if ``y`` cannot be decoded by this operator.

        Parameters
        ----------
        {check_signals_Y}
        """

    @abc.abstractmethod
    def check_code(self, z: torch.Tensor, name: str = "Z") -> None:
        """Raise ``ValueError`` naming ``name`` if ``z`` is not a batch of codes.

        Parameters
        ----------
        {check_codes_Z}
        """

    @abc.abstractmethod
    def normalize_(self) -> LinearOperator:
        """Rescale atoms to unit Euclidean norm in place; returns ``self``."""

    def gram_matrix(self) -> torch.Tensor | None:
        """The explicit Gram matrix ``AᵀA`` ``(n_atoms, n_atoms)`` where the operator has a
        small one (a dense dictionary), else ``None``. Solvers read structure from this (exact
        finishes on a support, coordinate descent, per-sample step sizes), never from types."""
        return None

    def local_kernels(self) -> tuple[torch.Tensor, bool] | None:
        """For an operator whose atoms are convolution kernels (a code coefficient touches one
        ``kh × kw`` window of the image), the kernels ``(n_atoms, channels, kh, kw)`` and whether
        the windows wrap around (circular boundaries); else ``None``. Coefficient ``(m, i, j)``
        weighs pixel ``(i + a − o_h, j + b − o_w)`` by ``kernels[m, :, a, b]``, with ``o = 0``
        (wrapped) or ``o = k − 1`` (``"full"``, clipped to the image)."""
        return None

    @property
    def has_gram_matrix(self) -> bool:
        """Whether :meth:`gram_matrix` gives a matrix, answered without building it."""
        return False

    def matrix(self) -> torch.Tensor | None:
        """The operator as an explicit matrix ``(n_features, n_atoms)`` where it is stored as
        one (a dense dictionary), else ``None``; a solver reads from it what a product cannot
        tell, e.g. which rows a sparse signal touches. A subclass whose :meth:`decode` is not
        ``z @ matrix().T`` or whose :meth:`adjoint` is not ``r @ matrix()`` returns ``None``."""
        return None

    def gram(self, z: torch.Tensor) -> torch.Tensor:
        """``AᵀA z``; operators override this when a cheaper route exists.

        Parameters
        ----------
        {z_codes}

        {returns_code_shaped}
        """
        return self.adjoint(self.decode(z))

    def invalidate(self) -> None:
        """Forget cached quantities after the parameters changed in place."""
        self._lipschitz_cache.clear()

    def lipschitz(self, signal_shape: tuple[int, ...], n_iter: int = 100) -> torch.Tensor:
        """An upper estimate of ``λ_max(AᵀA)`` for signals of ``signal_shape``, as a 0-dim tensor.

        Power iteration from a fixed start vector, entirely on the operator's device (no host
        synchronisation), times a 1 % safety margin so that a step ``1/L`` is a descent step.
        Cached per ``(signal_shape, n_iter)`` until :meth:`invalidate`.

        Parameters
        ----------
        signal_shape : tuple of int
            Shape of one signal, without the batch dimension.
        n_iter : int, default=100
            Number of power iterations.

        Returns
        -------
        torch.Tensor of shape ()
            The estimate, on the operator's device and in its dtype.
        """
        key = (*tuple(signal_shape), check_int(n_iter, "n_iter", low=1))
        self._drop_stale_caches()
        if key not in self._lipschitz_cache:
            shape = (1, *self.code_shape(tuple(signal_shape)))
            gen = torch.Generator().manual_seed(0)
            v = torch.randn(shape, generator=gen, dtype=torch.float64).to(self.device, self.dtype)
            v = v / v.norm()
            estimate = v.new_zeros(())
            for _ in range(n_iter):
                w = self.gram(v)
                estimate = (w * v).sum()
                v = unit_norm(w)
            self._lipschitz_cache[key] = estimate.clamp_min(torch.finfo(self.dtype).tiny) * 1.01
        return self._lipschitz_cache[key]
