"""Convolutional dictionary ``y = Σ_i K_i * z_i``: kernels ``(n_atoms, channels, kh, kw)``.

Signals are images ``(batch, channels, H, W)``, codes are maps ``(batch, n_atoms, H', W')``.
``decode`` is a true convolution (``conv_transpose2d``), ``adjoint`` the matching correlation
(``conv2d``). Two boundary conditions:

- ``"full"`` (default): code maps of size ``(H + kh − 1, W + kw − 1)``, so that every pixel is
  reached by every shift of every kernel, edge pixels included; the reconstruction is the
  central ``H × W`` part of the linear convolution and nothing wraps around or is tied to the
  image edges. Even and odd kernel sizes behave alike.
- ``"circular"``: periodic images, code maps of size ``(H, W)``, ``y[n] = Σ_j K[j] z[(n − j) mod
  N]`` with the kernel's origin at index 0: exactly SPORCO's ``ConvBPDN`` problem.

Both are computed either directly (``conv2d``/``conv_transpose2d``) or by FFT (the same numbers
to rounding); ``method="auto"`` picks FFT for circular boundaries and large kernels.

FFT route, per call: one ``rfft2`` of the inputs, a per-frequency product with the cached kernel
spectra, one inverse transform. The Gram product ``KᵀK z`` of circular boundaries never leaves
the Fourier domain (code maps → one image spectrum per channel → code maps). On CPU the inverse
transform to the ``n_atoms`` code maps (adjoint and Gram) packs two real maps into one complex
one, ``o_{2k} + i·o_{2k+1}``, and runs a full complex ``ifft2`` of half as many maps: PyTorch's
CPU ``irfft2`` copies its input twice and costs about twice as much (B3 in ``benchmarks/``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .._docs import fill_doc
from .._validation import as_tensor, check_choice
from .base import LinearOperator, unit_norm

BOUNDARIES = ("full", "circular")


@fill_doc
@dataclass(frozen=True)
class FourierEmbedding:
    """A convolutional operator as a circular convolution on an FFT grid, for solvers that work
    per frequency (:meth:`ConvDictionary.fourier_embedding`).

    Codes live in ``code_region`` of the grid (zero elsewhere), images are read from
    ``signal_region``; for circular boundaries both are the whole grid. Per frequency the
    operator is the ``channels × n_atoms`` matrix ``spectrum[:, :, ky, kx]ᵀ``.

    Attributes
    ----------
    {fft_grid}
    spectrum : torch.Tensor, shape (n_atoms, channels, gh, gw // 2 + 1)
        ``rfft2`` of the kernels zero-padded to the grid (origin at index 0).
    code_region, signal_region : tuple of slice
        Where the code maps and the images sit in the grid.
    circular : bool
        Whether both regions are the whole grid (no mask needed).
    """

    grid: tuple[int, int]
    spectrum: torch.Tensor
    code_region: tuple[slice, slice]
    signal_region: tuple[slice, slice]
    circular: bool

    def synthesis(self, x_f: torch.Tensor) -> torch.Tensor:
        """Half spectra of codes to half spectra of images (the operator, per frequency).

        Parameters
        ----------
        x_f : torch.Tensor of shape (B, n_atoms, gh, gw // 2 + 1)
            ``rfft2`` of code maps on the grid.

        Returns
        -------
        torch.Tensor of shape (B, channels, gh, gw // 2 + 1)
        """
        return _mix(x_f, self.spectrum, adjoint=False)

    def analysis(self, r_f: torch.Tensor) -> torch.Tensor:
        """The adjoint of :meth:`synthesis`.

        Parameters
        ----------
        r_f : torch.Tensor of shape (B, channels, gh, gw // 2 + 1)
            ``rfft2`` of images on the grid.

        Returns
        -------
        torch.Tensor of shape (B, n_atoms, gh, gw // 2 + 1)
        """
        return _mix(r_f, self.spectrum, adjoint=True)
METHODS = ("auto", "direct", "fft")


@fill_doc
class ConvDictionary(LinearOperator):
    """A bank of ``n_atoms`` convolution kernels, each ``(channels, kh, kw)``.

    Atoms are the kernels; their norm is the Frobenius norm over ``(channels, kh, kw)``.

    Parameters
    ----------
    kernels : array-like or torch.Tensor of shape (n_atoms, channels, kh, kw)
        The kernels (a tensor is used as is, not copied: :meth:`normalize_` rescales it in
        place).
    boundary : {"full", "circular"}, default="full"
        Boundary condition (see the module docstring).
    method : {"auto", "direct", "fft"}, default="auto"
        How to compute the convolutions.
    check_input : bool, default=True
        Check ``kernels`` (type, rank, finite values: one host synchronisation). ``False``
        takes a float tensor of the right rank as it is, for a model's own weights inside
        ``forward`` or an iteration loop, where the entry point has checked them.
    """

    def __init__(self, kernels: Any, *, boundary: str = "full", method: str = "auto",
                 check_input: bool = True) -> None:
        super().__init__()
        check_choice(boundary, "boundary", BOUNDARIES)
        check_choice(method, "method", METHODS)
        self.kernels = as_tensor(kernels, "kernels", ndim=4) if check_input else kernels
        self.boundary = boundary
        self.method = method
        self._spectra: dict[tuple[int, int], torch.Tensor] = {}
        self._packed: dict[tuple[int, int], torch.Tensor] = {}

    # ----------------------------------------------------------------- description
    @property
    def atoms(self) -> torch.Tensor:
        return self.kernels

    @property
    def channels(self) -> int:
        return self.kernels.shape[1]

    @property
    def kernel_size(self) -> tuple[int, int]:
        return (self.kernels.shape[2], self.kernels.shape[3])

    def __repr__(self) -> str:
        return (
            f"ConvDictionary(n_atoms={self.n_atoms}, channels={self.channels}, "
            f"kernel_size={self.kernel_size}, boundary={self.boundary!r})"
        )

    def _like(self, atoms: torch.Tensor) -> ConvDictionary:
        return ConvDictionary(atoms, boundary=self.boundary, method=self.method,
                              check_input=False)

    def code_shape(self, signal_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The code shape of one image.

        Parameters
        ----------
        signal_shape : tuple of int
            ``(channels, H, W)``.

        {returns_shape}
            ``(n_atoms, H + kh − 1, W + kw − 1)`` for ``"full"``, ``(n_atoms, H, W)`` for
            ``"circular"``.
        """
        if len(signal_shape) != 3:
            raise ValueError(f"signal_shape must be (channels, H, W), got {tuple(signal_shape)}")
        _, h, w = signal_shape
        if self.boundary == "circular":
            return (self.n_atoms, h, w)
        kh, kw = self.kernel_size
        return (self.n_atoms, h + kh - 1, w + kw - 1)

    def signal_shape(self, code_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The inverse of :meth:`code_shape`.

        Parameters
        ----------
        code_shape : tuple of int
            ``(n_atoms, H', W')``.

        {returns_shape}
            ``(channels, H, W)``.
        """
        _, h, w = code_shape
        if self.boundary == "circular":
            return (self.channels, h, w)
        kh, kw = self.kernel_size
        return (self.channels, h - kh + 1, w - kw + 1)

    def check_signal(self, y: torch.Tensor, name: str = "Y") -> None:
        """Raise ``ValueError`` unless ``y`` is a batch of images with the kernels' channels, each
        at least as large as the kernels.

        Parameters
        ----------
        y : torch.Tensor of shape (batch, channels, H, W)
            Images to check.
        {check_name_Y}
        """
        if y.dim() != 4:
            raise ValueError(
                f"{name} must be images (batch, channels, H, W) for a convolutional dictionary, "
                f"got shape {tuple(y.shape)}"
            )
        if y.shape[1] != self.channels:
            raise ValueError(
                f"{name} has {y.shape[1]} channels but the kernels have {self.channels} "
                f"(kernels shape {tuple(self.kernels.shape)})"
            )
        kh, kw = self.kernel_size
        if y.shape[2] < kh or y.shape[3] < kw:
            raise ValueError(
                f"{name} images are {y.shape[2]}x{y.shape[3]}, smaller than the {kh}x{kw} "
                "kernels; use smaller kernels or larger images"
            )

    def check_code(self, z: torch.Tensor, name: str = "Z") -> None:
        """Raise ``ValueError`` naming ``name`` if ``z`` is not a batch of code maps.

        Parameters
        ----------
        z : torch.Tensor of shape (batch, n_atoms, H', W')
            Code maps to check.
        {check_name_Z}
        """
        kh, kw = self.kernel_size
        if z.dim() != 4 or z.shape[1] != self.n_atoms:
            raise ValueError(
                f"{name} must be code maps (batch, {self.n_atoms}, H', W'), got {tuple(z.shape)}"
            )
        if self.boundary == "full" and (z.shape[2] < 2 * kh - 1 or z.shape[3] < 2 * kw - 1):
            raise ValueError(
                f"{name} maps are {z.shape[2]}x{z.shape[3]}; 'full' codes of images at least as "
                f"large as the {kh}x{kw} kernels are at least {2 * kh - 1}x{2 * kw - 1}"
            )
        if self.boundary == "circular" and (z.shape[2] < kh or z.shape[3] < kw):
            raise ValueError(
                f"{name} maps are {z.shape[2]}x{z.shape[3]}, smaller than the {kh}x{kw} kernels"
            )

    # ----------------------------------------------------------------- the operator
    def _use_fft(self) -> bool:
        if self.method != "auto":
            return self.method == "fft"
        # Measured on CPU: FFT wins for kernels of 7x7 and more, and for 4x4 to 6x6 kernels
        # when the atoms are few; direct convolution wins for small kernels.
        area = self.kernel_size[0] * self.kernel_size[1]
        return self.boundary == "circular" or area >= 49 or (area >= 16 and self.n_atoms <= 8)

    def _grid(self, code_hw: tuple[int, int]) -> tuple[int, int]:
        """The FFT grid: the image for circular boundaries; for full ones any grid at least as
        large as the code map works (nothing wraps onto the cropped image), so a fast size."""
        if self.boundary == "circular":
            return (int(code_hw[0]), int(code_hw[1]))
        return (_fast_size(code_hw[0]), _fast_size(code_hw[1]))

    def spectrum(self, grid: tuple[int, int]) -> torch.Tensor:
        """``rfft2`` of the kernels zero-padded to ``grid``, cached until :meth:`invalidate`.

        Parameters
        ----------
        {fft_grid}

        Returns
        -------
        torch.Tensor of shape (n_atoms, channels, gh, gw // 2 + 1)
        """
        grid = (int(grid[0]), int(grid[1]))
        self._drop_stale_caches()
        if grid not in self._spectra:
            self._spectra[grid] = torch.fft.rfft2(self.kernels, s=grid)
        return self._spectra[grid]

    def fourier_embedding(self, signal_hw: tuple[int, int]) -> FourierEmbedding:
        """This operator, for images of size ``signal_hw``, as a (masked) circular convolution on an
        FFT grid: the structure per-frequency solvers (ADMM) read.

        Circular: the ``H × W`` grid itself. Full: codes of size ``(H + kh − 1, W + kw − 1)``
        at the grid's origin, images at offset ``(kh − 1, kw − 1)``; no product of a code in
        its region wraps onto the image region, so the cropped circular convolution equals the
        operator exactly, on a grid of fast FFT sizes at least as large as the codes.

        Parameters
        ----------
        signal_hw : tuple of int
            ``(H, W)``, the image size.

        Returns
        -------
        FourierEmbedding
        """
        h, w = (int(s) for s in signal_hw)
        kh, kw = self.kernel_size
        if self.boundary == "circular":
            whole = (slice(0, h), slice(0, w))
            return FourierEmbedding((h, w), self.spectrum((h, w)), whole, whole, True)
        code_hw = (h + kh - 1, w + kw - 1)
        grid = self._grid(code_hw)
        return FourierEmbedding(
            grid, self.spectrum(grid), (slice(0, code_hw[0]), slice(0, code_hw[1])),
            (slice(kh - 1, kh - 1 + h), slice(kw - 1, kw - 1 + w)), False)

    def packed_adjoint_spectrum(self, grid: tuple[int, int]) -> torch.Tensor:
        """``conj(K̂_{2k}) + i·conj(K̂_{2k+1})`` on the full ``grid`` (an atom of zeros pads an odd
        count), cached until :meth:`invalidate`.

        The product of an image spectrum with row ``k`` is the spectrum of
        ``o_{2k} + i·o_{2k+1}``, where ``o_m`` is the (real) correlation with kernel ``m``.

        Parameters
        ----------
        {fft_grid}

        Returns
        -------
        torch.Tensor of shape (ceil(n_atoms / 2), channels, gh, gw)
        """
        grid = (int(grid[0]), int(grid[1]))
        self._drop_stale_caches()
        if grid not in self._packed:
            spec = torch.fft.fft2(self.kernels, s=grid).conj()
            if self.n_atoms % 2:
                spec = torch.cat([spec, torch.zeros_like(spec[:1])])
            self._packed[grid] = (spec[0::2] + 1j * spec[1::2]).contiguous()
        return self._packed[grid]

    def _to_codes(self, y_f: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``Σ_c conj(K̂_{m,c}) Ŷ_c`` back in space: half spectra ``(B, channels, gh, gw//2+1)``
        of images to the real maps ``(B, n_atoms, gh, gw)``."""
        if y_f.device.type != "cpu":
            return torch.fft.irfft2(_mix(y_f, self.spectrum(grid), adjoint=True), s=grid)
        packed = self.packed_adjoint_spectrum(grid)
        full = _hermitian_full(y_f, grid[1])
        q = full[:, :1] * packed[:, 0]
        for c in range(1, self.channels):
            q.addcmul_(full[:, c : c + 1], packed[:, c])
        q = torch.fft.ifft2(q)
        batch, pairs = q.shape[:2]
        # (B, pairs, gh, gw, 2) -> (B, 2·pairs, gh, gw): the real parts are the even atoms.
        maps = torch.view_as_real(q).permute(0, 1, 4, 2, 3).reshape(batch, 2 * pairs, *grid)
        if 2 * pairs != self.n_atoms:
            maps = maps[:, : self.n_atoms].contiguous()
        return maps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``Σ_i K_i * z_i``: code maps to images.

        Parameters
        ----------
        {z_maps}

        {returns_images}
            With ``H = H' − kh + 1`` for ``"full"``, ``H = H'`` for ``"circular"`` (same for ``W``).
        """
        kh, kw = self.kernel_size
        if self._use_fft():
            grid = self._grid(z.shape[-2:])
            y = torch.fft.irfft2(_mix(torch.fft.rfft2(z, s=grid), self.spectrum(grid),
                                      adjoint=False), s=grid)
            if self.boundary == "circular":
                return y
            h, w = z.shape[-2] - kh + 1, z.shape[-1] - kw + 1
            return y[..., kh - 1 : kh - 1 + h, kw - 1 : kw - 1 + w]
        if self.boundary == "circular":
            z = F.pad(z, (kw - 1, 0, kh - 1, 0), mode="circular")
        return F.conv_transpose2d(z, self.kernels, padding=(kh - 1, kw - 1))

    def adjoint(self, r: torch.Tensor) -> torch.Tensor:
        """The correlation ``Kᵀ r``: images to code-shaped maps.

        Parameters
        ----------
        r : torch.Tensor of shape (batch, channels, H, W)
            Images (typically a residual).

        {returns_maps}
            With ``(H', W') = (H + kh − 1, W + kw − 1)`` for ``"full"``, ``(H, W)`` for
            ``"circular"``.
        """
        kh, kw = self.kernel_size
        if self._use_fft():
            code_hw = (r.shape[-2] + kh - 1, r.shape[-1] + kw - 1)
            if self.boundary == "circular":
                code_hw = (r.shape[-2], r.shape[-1])
            else:
                r = F.pad(r, (kw - 1, 0, kh - 1, 0))
            grid = self._grid(code_hw)
            z = self._to_codes(torch.fft.rfft2(r, s=grid), grid)
            if self.boundary == "circular":
                return z
            return z[..., : code_hw[0], : code_hw[1]]
        return correlate(self.kernels, r, self.boundary)

    def gram(self, z: torch.Tensor) -> torch.Tensor:
        """``KᵀK z``; for circular boundaries one FFT round trip (no pass through images).

        Parameters
        ----------
        {z_maps}

        {returns_maps}
        """
        if self.boundary == "circular" and self._use_fft():
            grid = (int(z.shape[-2]), int(z.shape[-1]))
            image_f = _mix(torch.fft.rfft2(z), self.spectrum(grid), adjoint=False)
            return self._to_codes(image_f, grid)
        return self.adjoint(self.decode(z))

    def local_kernels(self) -> tuple[torch.Tensor, bool]:
        """The kernels ``(n_atoms, channels, kh, kw)`` and whether the boundary is circular (see
        :meth:`LinearOperator.local_kernels`)."""
        return self.kernels, self.boundary == "circular"

    def footprint_max(self, v: torch.Tensor) -> torch.Tensor:
        """For every pixel, the largest value among the code positions whose kernel covers it
        (the code positions that :meth:`decode` mixes into that pixel).

        Parameters
        ----------
        v : torch.Tensor of shape (batch, 1, H', W')
            One value per code position (for example a maximum over the atoms).

        Returns
        -------
        torch.Tensor of shape (batch, 1, H, W)
            With ``(H, W)`` the signal size of :meth:`signal_shape`; pixel ``q`` holds the
            maximum of ``v`` over the ``kh × kw`` positions ``q − j`` (circular, modulo the
            size) or ``q + j`` (full), ``0 ≤ j < (kh, kw)``.
        """
        kh, kw = self.kernel_size
        if self.boundary == "circular":
            v = F.pad(v, (kw - 1, 0, kh - 1, 0), mode="circular")
        return _sliding_max(_sliding_max(v, kw, -1), kh, -2)

    # ----------------------------------------------------------------- step size
    def lipschitz(self, signal_shape: tuple[int, ...], n_iter: int = 100) -> torch.Tensor:
        """``λ_max(KᵀK)`` for images of ``signal_shape``, a 0-dim tensor.

        Circular: exact, the largest squared singular value of the ``channels × n_atoms``
        kernel spectrum over the ``H × W`` frequency grid. Full: the same quantity on the grid of
        size ``(H + 2kh − 2, W + 2kw − 2)``, on which the linear convolution of a full code map
        does not wrap; the full operator is a restriction of that circular one, so the value is
        a certified upper bound (tight for images much larger than the kernels), computed
        without iterating.

        Parameters
        ----------
        signal_shape : tuple of int
            ``(channels, H, W)``.
        n_iter : int, default=100
            Unused (kept for the base-class signature).

        Returns
        -------
        torch.Tensor of shape ()
            The constant (with a small safety margin), cached until :meth:`invalidate`.
        """
        if len(signal_shape) != 3:
            raise ValueError(f"signal_shape must be (channels, H, W), got {tuple(signal_shape)}")
        _, h, w = (int(s) for s in signal_shape)
        if self.boundary == "full":
            kh, kw = self.kernel_size
            h, w = h + 2 * kh - 2, w + 2 * kw - 2
        key = (h, w, -1)
        self._drop_stale_caches()
        if key not in self._lipschitz_cache:
            spec = torch.fft.rfft2(self.kernels, s=(h, w)).permute(2, 3, 1, 0)  # (.., C, M)
            if self.channels == 1:
                top = (spec.abs() ** 2).sum(-1).amax()
            else:
                small = spec @ spec.mH if self.channels <= self.n_atoms else spec.mH @ spec
                top = torch.linalg.eigvalsh(small)[..., -1].amax()
            # Relative rounding of the FFT is ~eps·log(N); the margin keeps 1/L a descent step.
            margin = 1 + 64 * torch.finfo(self.dtype).eps
            self._lipschitz_cache[key] = (top * margin).clamp_min(torch.finfo(self.dtype).tiny)
        return self._lipschitz_cache[key]

    # ----------------------------------------------------------------- parameters
    def invalidate(self) -> None:
        super().invalidate()
        self._spectra.clear()
        self._packed.clear()

    def atom_norms(self) -> torch.Tensor:
        """Frobenius norm of each kernel, ``(n_atoms,)``."""
        return self.kernels.flatten(1).norm(dim=1)

    def normalize_(self) -> ConvDictionary:
        flat = self.kernels.flatten(1)  # overflow-safe: kernels of 1e200 stay kernels
        self.kernels.copy_(unit_norm(flat, dim=1).view_as(self.kernels))
        self.invalidate()
        return self


def _sliding_max(v: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """The maximum over windows of ``k`` consecutive entries along ``dim`` (stride 1, no
    padding), as ``k − 1`` elementwise maxima of shifted views: on a 263×263 map with ``k = 8``,
    0.1 ms where ``max_pool2d`` takes 2.8 ms."""
    n = v.shape[dim] - k + 1
    out = v.narrow(dim, 0, n).clone()
    for shift in range(1, k):
        torch.maximum(out, v.narrow(dim, shift, n), out=out)
    return out


def correlate(kernels: torch.Tensor, r: torch.Tensor, boundary: str) -> torch.Tensor:
    """The adjoint ``Kᵀ r`` by direct correlation, a pure function (no checks, no host
    synchronisation: usable inside a ``forward`` and under ``torch.compile``).

    Parameters
    ----------
    kernels : torch.Tensor, shape (n_atoms, channels, kh, kw)
    r : torch.Tensor, shape (batch, channels, H, W)
    boundary : {"full", "circular"}

    Returns
    -------
    torch.Tensor, shape (batch, n_atoms, H + kh − 1, W + kw − 1) or (batch, n_atoms, H, W)
    """
    kh, kw = kernels.shape[-2:]
    if boundary == "circular":
        return F.conv2d(F.pad(r, (0, kw - 1, 0, kh - 1), mode="circular"), kernels)
    return F.conv2d(r, kernels, padding=(kh - 1, kw - 1))


def _fast_size(n: int) -> int:
    """The smallest ``m >= n`` whose prime factors are all 2, 3, 5 or 7 (fast FFT lengths)."""
    m = int(n)
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def _hermitian_full(x_f: torch.Tensor, width: int) -> torch.Tensor:
    """The full 2-D spectrum ``(…, h, width)`` of real maps from their half ``(…, h, w)``,
    ``w = width // 2 + 1``: ``X[ky, kx] = conj(X[−ky, −kx])`` (indices modulo the grid)."""
    tail = x_f[..., 1 : width - x_f.shape[-1] + 1].flip(-1)
    tail = torch.roll(tail.flip(-2), 1, dims=-2).conj()
    return torch.cat([x_f, tail], dim=-1)


def _mix(x_f: torch.Tensor, spec: torch.Tensor, *, adjoint: bool) -> torch.Tensor:
    """Per-frequency product with the kernel spectrum ``spec`` ``(M, C, h, w)``.

    Forward: ``(B, M, h, w) -> (B, C, h, w)``, ``Y[c] = Σ_m S[m, c] X[m]``.
    Adjoint: ``(B, C, h, w) -> (B, M, h, w)``, ``X[m] = Σ_c conj(S[m, c]) Y[c]``.
    A loop over the (few) channels beats einsum's complex batched products on CPU.
    """
    channels = spec.shape[1]
    if adjoint:
        out = x_f[:, :1] * spec[:, 0].conj()
        for c in range(1, channels):
            out = out + x_f[:, c : c + 1] * spec[:, c].conj()
        return out
    if x_f.device.type == "cpu":
        # Accumulate atom by atom into one image spectrum per channel: no temporary of the
        # codes' size, which on CPU costs more than the arithmetic.
        out = []
        for c in range(channels):
            acc = x_f[:, 0] * spec[0, c]
            for m in range(1, spec.shape[0]):
                acc.addcmul_(x_f[:, m], spec[m, c])
            out.append(acc)
        return torch.stack(out, 1)
    return torch.stack([(x_f * spec[:, c]).sum(1) for c in range(channels)], 1)


__all__ = ["ConvDictionary", "FourierEmbedding", "BOUNDARIES", "METHODS"]
