"""Convolutional dictionary learning: ``min Σ_n ½‖y_n − Σ_i K_i * z_ni‖² + λ‖z_n‖₁``.

Alternating minimisation over mini-batches of images: codes by a few iterations of the library's
solver (``method="auto"``: Fourier-domain ADMM for circular boundaries, FISTA otherwise),
warm-started from each image's previous codes, then projected gradient steps on the kernels
onto the unit ball ``‖K_i‖ ≤ 1`` with a backtracking step, after which every kernel is
renormalised to unit norm and the stored codes of its map are rescaled by the inverse factor
(the reconstruction is unchanged and ``‖z‖₁`` can only shrink, so the energy does not rise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .._validation import (
    as_tensor,
    check_bool,
    check_choice,
    check_int,
    check_lam,
    check_scalar,
    resolve_device,
)
from ..data.image_shards import ShardedImages
from ..data.patches import random_windows
from ..operators import ConvDictionary, unit_norm
from ..operators.conv import BOUNDARIES
from ..regularizers import UnitBall
from ..solvers.smooth import JointObjective, smooth_proximal_gradient
from ..training import distributed as dist
from ..training.fit_options import FitOptions, with_fit_options
from ..training.history import MeanRecord
from ._base import ModelConfig, dtype_name
from ._dictionary_model import DictionaryModel

CODING_RHO_PER_LAM = 50.0
"""ADMM's initial penalty in the coding step is ``50λ + 1`` (SPORCO's default), not ``solve``'s
``10λ + 1`` (``λ`` divided by the image's largest magnitude where it exceeds 1, in both). The
step runs a few warm-started iterations, and there the larger penalty did better: on B4 the fit
ended at energy 176.4 with at most 15 ADMM iterations per step and 212.5 with at most 10
starting from ``10λ + 1``, against 162.8 and 165.5 from ``50λ + 1``
(``benchmarks/results/B4_initial_penalty.md`` and ``B4.md``)."""


def random_kernel_patches(
    Y: torch.Tensor | ShardedImages, n: int, size: int, gen: torch.Generator,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``n`` random ``size × size`` windows of the images, mean removed per channel and scaled to
    unit norm (all-flat windows become noise).

    Parameters
    ----------
    Y : torch.Tensor or ShardedImages of shape (N, C, H, W)
        Images (streamed ones are read only where a window falls).
    n : int
        Number of windows.
    size : int
        Side of a window.
    gen : torch.Generator
        CPU generator of the window positions and of the noise.
    dtype : torch.dtype or None
        Precision of the windows (default: the images').

    Returns
    -------
    torch.Tensor of shape (n, C, size, size)
    """
    patches = random_windows(Y, n, size, gen)
    patches = patches if dtype is None else patches.to(dtype)
    patches = patches - patches.mean(dim=(2, 3), keepdim=True)
    noise = torch.randn(patches.shape, generator=gen, dtype=torch.float64).to(patches)
    norms = patches.flatten(1).norm(dim=1)
    flat = norms <= 1e-8 * max(float(norms.max()), 1.0)
    patches[flat] = noise[flat]
    return patches / patches.flatten(1).norm(dim=1)[:, None, None, None]


@dataclass(frozen=True)
class ConvDictionaryLearningConfig(ModelConfig):
    """The constructor arguments of :class:`ConvDictionaryLearning` (``dtype`` by name)."""

    n_atoms: int
    kernel_size: int
    channels: int = 1
    lam: float = 0.1
    boundary: str = "full"
    nonneg: bool = False


class ConvDictionaryLearning(DictionaryModel):
    """Learn ``n_atoms`` unit-norm kernels ``(n_atoms, channels, k, k)`` from images.

    Parameters
    ----------
    n_atoms, kernel_size, channels : int
        Number of kernels, their side ``k`` and the image channels.
    lam : float
        λ of ``½‖y − Σ K_i * z_i‖² + λ‖z‖₁`` (summed over pixels; the lecture's λ is 2λ).
    boundary : ``"full"`` or ``"circular"``
        ``"full"``: codes larger than the images by ``k − 1`` (default); see
        :class:`~latentebm.operators.ConvDictionary`.
    nonneg : bool
        Constrain the codes to ``z ≥ 0``.
    init : ``"data"``, ``"random"`` or array ``(n_atoms, channels, k, k)``
        ``"data"``: random windows of the first training images.
    seed : int
    device, dtype

    The kernels are a buffer (learned by projected steps, not by backpropagation); the step
    counter, history, step-size estimate and ``init="data"`` flag travel in ``state_dict()``.
    """

    SIGNAL_NDIM = 4
    KIND = "conv_dictionary_learning"
    Config = ConvDictionaryLearningConfig
    TRAINING_STATE = ("n_steps_", "history_", "_init_from_data", "step_lipschitz")

    def __init__(
        self,
        n_atoms: int,
        kernel_size: int,
        channels: int = 1,
        lam: float = 0.1,
        *,
        boundary: str = "full",
        nonneg: bool = False,
        init: Any = "data",
        seed: int = 0,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        check_choice(boundary, "boundary", BOUNDARIES)
        self.config = ConvDictionaryLearningConfig(
            n_atoms=check_int(n_atoms, "n_atoms", low=1),
            kernel_size=check_int(kernel_size, "kernel_size", low=1),
            channels=check_int(channels, "channels", low=1), lam=check_lam(lam),
            boundary=boundary, nonneg=nonneg, seed=seed,
            dtype=dtype_name(dtype),
        )
        device = resolve_device(device)
        shape = (self.n_atoms, self.channels, self.kernel_size, self.kernel_size)
        self._init_from_data = isinstance(init, str) and init == "data"
        if isinstance(init, str):
            if init not in ("data", "random"):
                raise ValueError(f"init must be 'data', 'random' or an array, got {init!r}")
            gen = torch.Generator().manual_seed(self.seed)
            K = torch.randn(shape, generator=gen, dtype=torch.float64)
        else:
            K = as_tensor(init, "init", ndim=4).to(torch.float64).cpu().clone()
            if tuple(K.shape) != shape:
                raise ValueError(f"init must have shape {shape}, got {tuple(K.shape)}")
            if bool((K.flatten(1) == 0).all(1).any()):
                raise ValueError("init has an all-zero kernel; kernels must be non-zero")
        K = unit_norm(K.flatten(1), dim=1).view_as(K)  # overflow-safe (kernels of 1e200)
        self.register_buffer("kernels", K.to(device=device, dtype=dtype))
        self.register_buffer(
            "last_used", torch.zeros(self.n_atoms, dtype=torch.long, device=device)
        )
        self.step_lipschitz = 1.0
        self.n_steps_ = 0
        self.history_: list[dict[str, float]] = []

    # ----------------------------------------------------------------- inference
    def dictionary(self) -> torch.Tensor:
        """The kernels, ``(n_atoms, channels, k, k)``, detached."""
        return self.kernels.detach()

    def operator(self) -> ConvDictionary:
        return ConvDictionary(self.dictionary(), boundary=self.boundary)

    # ----------------------------------------------------------------- learning
    @with_fit_options(epochs=1, batch_size=8, n="n_images", checkpoint_every=50,
                      callback_args="step, model, batch_energy",
                      callback_note="; ``batch_energy`` ``(batch,)``")
    def fit(
        self,
        Y: Any,
        *,
        tol: float = 1e-3,
        max_iter: int = 100,
        dict_steps: int = 10,
        replace_threshold: float | None = 0.9,
        warm_start: bool | None = None,
        method: str = "auto",
        options: FitOptions,
    ) -> list[dict[str, float]]:
        """Learn the kernels from images ``Y``.

        Each mini-batch: codes by the solver ``method`` to relative duality gap ``tol`` (at most
        ``max_iter`` iterations), warm-started from the batch's previous codes when
        ``warm_start``; then ``dict_steps`` projected gradient steps on the kernels and the
        renormalisation. The epoch order comes from the seed, so a resumed run equals an
        uninterrupted one.

        Parameters
        ----------
        Y : array-like, torch.Tensor or ShardedImages of shape (n_images, channels, H, W)
            Training images; a :class:`~latentebm.data.image_shards.ShardedImages` streams them
            from disk, one mini-batch at a time (memory then does not grow with the number of
            images).
        {fit_batches}
        tol : float, default=1e-3
            Relative duality gap of the coding step.
        max_iter : int, default=100
            Iteration cap of the coding step.
        dict_steps : int, default=10
            Projected gradient steps on the kernels per mini-batch.
        replace_threshold : float or None, default=0.9
            Kernels unused for an epoch, or that duplicate a more used one up to a shift, are
            re-initialised from the residual (``None``: never).
        warm_start : bool or None, default=None
            Keep the codes of every image (``n_images × n_atoms × H' × W'`` numbers) to warm-start
            the next epoch's coding. ``None``: on for images in memory, off for streamed ones
            (``True`` is refused there: that buffer is what streaming avoids).
        method : str, default="auto"
            Solver of the coding step, as in :func:`latentebm.solve`: ``"auto"`` runs ADMM in
            the Fourier domain for circular boundaries (B4 in ``benchmarks/``: with 10 ADMM
            iterations per mini-batch the energy is lower at every moment than with 5 FISTA
            iterations) and, for the ``"full"`` boundary on the CPU, FISTA with backtracking;
            ``"admm"`` or ``"fista"`` force one.
        {fit_options}

        {returns_history}

        Notes
        -----
        Under ``torchrun`` ``batch_size`` is the global batch and its images are shared out
        between the processes: each computes the codes of its images, the kernel step's
        objective and gradient are summed over the processes (so every process takes the same
        steps, those of one process on the whole batch), and kernels are replaced from the
        whole batch's residual. The warm-start codes are gathered onto every rank; the
        callback gets this process's energies. Rank 0 alone writes the checkpoint; every rank
        resumes from it.
        """
        streaming = isinstance(Y, ShardedImages)
        if streaming and warm_start:
            raise ValueError("warm_start=True keeps the codes of every image in memory; with "
                             "streamed images (ShardedImages) leave it None or False")
        warm_start = (not streaming if warm_start is None
                      else check_bool(warm_start, "warm_start"))
        Y_t = Y if streaming else self.check_input(Y, "Y", ndim=4, signals=True)[0]
        self.operator().check_signal(torch.empty((0, *Y.image_shape)) if streaming else Y_t, "Y")
        n = Y_t.shape[0]
        options = options.checked(n)
        tol = check_scalar(tol, "tol", low=0.0)
        max_iter = check_int(max_iter, "max_iter", low=1)
        dict_steps = check_int(dict_steps, "dict_steps", low=1)
        if replace_threshold is not None:
            replace_threshold = check_scalar(replace_threshold, "replace_threshold", low=0.0,
                                             high=1.0, low_inclusive=False)
        method = self.coding_method(method, tuple(Y_t.shape[1:]))
        coding_options = {"rho_per_lam": CODING_RHO_PER_LAM} if method == "admm" else {}
        steps_per_epoch = math.ceil(n / options.batch_size)
        fit_args = {"batch_size": options.batch_size, "n_images": n,
                    "image_shape": list(Y_t.shape[1:]), "warm_start": bool(warm_start),
                    "dict_steps": dict_steps, "replace_threshold": replace_threshold,
                    "method": method, "tol": tol, "max_iter": max_iter}
        code_shape = (n, *self.operator().code_shape(tuple(Y_t.shape[1:])))
        codes, start = self.start_fit(Y_t, fit_args, options,
                                      codes_shape=code_shape if warm_start else None)

        loop = self.training_loop(n, options, start=start, fit_args=fit_args,
                                  desc="conv dictionary",
                                  extra={} if codes is None else {"codes": codes})
        with loop:
            for epoch in loop.epochs():
                stats = _Stats.open(self.history_, epoch.index, resumed=epoch.resumed)
                for b in epoch:
                    mine = dist.shard(b.idx)
                    Yb = self._batch(Y_t, mine, streaming)
                    out = self(Yb, None if codes is None else codes[mine], tol=tol,
                               max_iter=max_iter, method=method, **coding_options)
                    Z = out.z
                    scale = self._kernel_step_(Yb, Z, dict_steps)
                    Z = Z * scale[None, :, None, None]
                    if replace_threshold is not None:
                        replaced = self._replace_atoms_(Yb, Z, replace_threshold, steps_per_epoch)
                        Z[:, replaced] = 0
                    if codes is not None:
                        codes[b.idx] = dist.all_gather_cat(Z, what="of the codes")
                    self.n_steps_ += 1
                    stats.add_codes(out.energy, Z)
                    loop.step_done(
                        b, self.n_steps_, loss=out.energy,
                        postfix={"energy": f"{stats.mean('energy'):.4g}",
                                 "nnz": f"{stats.nnz_share:.3%}"},
                        callback_args=(self.n_steps_, self, out.energy),
                    )
                stats.close()
        return self.history_

    def _batch(self, Y: torch.Tensor | ShardedImages, idx: torch.Tensor,
               streaming: bool) -> torch.Tensor:
        """The images ``idx`` on the model's device and dtype; streamed ones are read now and
        checked (the only time they pass an entry point)."""
        if not streaming:
            return Y[idx]
        images = Y[idx].to(self.device, self.dtype)
        if images.shape[0] == 0:  # a process's empty share of a small last batch
            return images
        return self.check_input(images, "Y", ndim=4, signals=True)[0]

    def _init_atoms_from(self, Y: torch.Tensor) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        self.kernels.copy_(random_kernel_patches(Y, self.n_atoms, self.kernel_size, gen,
                                                 dtype=self.dtype))
        self._init_from_data = False

    def _kernel_step_(self, Y: torch.Tensor, Z: torch.Tensor, n_steps: int) -> torch.Tensor:
        """``n_steps`` of the library's accelerated proximal gradient (FISTA with
        function-value restart, :func:`~latentebm.solvers.smooth_proximal_gradient`) on
        ``½‖Y − Σ K_i * Z_i‖²`` with the unit balls ``‖K_i‖ ≤ 1`` as the regularizer
        (:class:`~latentebm.regularizers.UnitBall`), step ``1/L`` by backtracking from the last
        one; then unit-norm kernels. Returns the norms before the
        renormalisation (the factor the codes must be multiplied by), ``(n_atoms,)``."""
        K = self.kernels.data
        L = self.step_lipschitz
        if self.boundary == "circular":
            loss = _CircularKernelLoss(Y, Z, self.kernel_size)
            value, value_and_grad = loss.value, loss.value_and_grad
        else:
            def value_and_grad(V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                with torch.enable_grad():
                    V = V.detach().clone().requires_grad_(True)
                    r = ConvDictionary(V, boundary=self.boundary, check_input=False).decode(Z) - Y
                    f = 0.5 * (r * r).sum()
                    (grad,) = torch.autograd.grad(f, V)
                return f.detach(), grad

            def value(V: torch.Tensor) -> torch.Tensor:
                with torch.no_grad():
                    r = ConvDictionary(V, boundary=self.boundary, check_input=False).decode(Z) - Y
                    return 0.5 * (r * r).sum()

        if dist.world_size() > 1:  # the whole batch's objective: sums over the processes
            local_value, local_value_and_grad = value, value_and_grad

            def value(V: torch.Tensor) -> torch.Tensor:
                return dist.all_reduce_(local_value(V).clone(), what="of the kernel objective")

            def value_and_grad(V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                f, grad = local_value_and_grad(V)
                both = dist.all_reduce_(torch.cat([f.reshape(1), grad.reshape(-1)]),
                                        what="of the kernel objective and gradient")
                return both[0], both[1:].view_as(grad)

        result = smooth_proximal_gradient(
            JointObjective(value, value_and_grad), K.unsqueeze(0), 1.0,
            UnitBall(atom_ndim=K.dim() - 1), max_iter=n_steps, tol=0.0, shrink=0.5,
            lipschitz=L, slack=1e-7)
        K.copy_(result.z[0])
        self.step_lipschitz = float(result.lipschitz[0])
        norms = K.flatten(1).norm(dim=1)
        scale = torch.where(norms > 1e-12, norms, torch.ones_like(norms))
        K.div_(scale[:, None, None, None])
        return scale

    def _replace_atoms_(
        self, Y: torch.Tensor, Z: torch.Tensor, threshold: float, dead_after: int
    ) -> torch.Tensor:
        """Re-initialise kernels unused for ``dead_after`` steps, or that match a more used
        kernel up to a shift (normalised cross-correlation ``>= threshold``), from the windows of
        the batch residual with the most energy. Returns the boolean mask of replaced kernels."""
        K = self.kernels.data
        k = self.kernel_size
        usage = dist.all_reduce_(Z.abs().sum(dim=(0, 2, 3)), what="of the kernel usage")
        self.last_used[usage > 0] = self.n_steps_
        # corr[i, j] = max over shifts of |<K_i, shift(K_j)>|, kernels have unit norm
        corr = F.conv2d(K, K, padding=k - 1).abs().flatten(2).amax(2)
        corr.fill_diagonal_(0)
        more_used = (usage[None, :] > usage[:, None]) | (
            (usage[None, :] == usage[:, None])
            & (torch.arange(self.n_atoms, device=K.device)[None, :]
               < torch.arange(self.n_atoms, device=K.device)[:, None])
        )
        dead = self.n_steps_ - self.last_used >= dead_after
        replace = dead | ((corr >= threshold) & more_used).any(1)
        n_new = int(replace.sum())
        if n_new == 0:
            return replace
        with torch.no_grad():
            residual = Y - ConvDictionary(K, boundary=self.boundary,
                                          check_input=False).decode(Z)
            # every rank picks the same windows from the whole batch, in batch order
            residual = dist.all_gather_cat(residual, what="of the residuals (replaced kernels)")
            energy = F.avg_pool2d((residual * residual).sum(1, keepdim=True), k, stride=1)
        flat = energy.flatten()
        _, w_out = energy.shape[-2:]
        per_image = energy[0, 0].numel()
        new = []
        for pos in torch.argsort(flat, descending=True)[: 16 * n_new].tolist():
            n, rest = divmod(pos, per_image)
            r, c = divmod(rest, w_out)
            patch = residual[n, :, r : r + k, c : c + k]
            if all(abs(float((patch * q).sum())) < threshold * float(patch.norm() * q.norm())
                   for q in new):
                new.append(patch)
            if len(new) == n_new:
                break
        if len(new) < n_new:
            return torch.zeros_like(replace)
        patches = torch.stack(new)
        patches = patches / patches.flatten(1).norm(dim=1).clamp_min(
            torch.finfo(K.dtype).tiny)[:, None, None, None]
        K[replace] = patches
        self.last_used[replace] = self.n_steps_
        return replace


class _CircularKernelLoss:
    """``f(V) = ½‖Y − Σ_i V_i ⊛ Z_i‖²`` over the kernels ``V`` ``(n_atoms, C, k, k)`` for fixed
    codes, circular boundaries, entirely in the Fourier domain.

    The codes do not change during a kernel step, so their spectra are computed once and laid
    out frequency-major, ``Ẑ(f)`` an ``N × n_atoms`` matrix per frequency. Then the residual
    spectrum is one batched matrix product ``R̂(f) = Ẑ(f) V̂(f) − Ŷ(f)`` (``V̂`` the zero-padded
    ``rfft2`` of the small kernels), ``f`` follows by Parseval on the half spectrum (no inverse
    transform), and the gradient ``∂f/∂V_{m,c} = Σ_n r_{n,c} ⋆ z_{n,m}`` is ``Ẑ(f)ᴴ R̂(f)``
    brought back by an ``irfft2`` of the kernel maps and cropped to the kernels' support. The
    same numbers as differentiating the decoder, to rounding, without a pass over the codes'
    spectra that allocates a temporary of their size (the reason it is several times faster).
    """

    def __init__(self, Y: torch.Tensor, Z: torch.Tensor, kernel_size: int) -> None:
        h, w = Y.shape[-2:]
        self.grid = (int(h), int(w))
        self.k = int(kernel_size)
        n, m = Z.shape[:2]
        wr = w // 2 + 1
        # (h, wr, N, M) and (h, wr, N, C): one small matrix per frequency
        self.Zf = torch.fft.rfft2(Z).permute(2, 3, 0, 1).reshape(h * wr, n, m).contiguous()
        self.Yf = torch.fft.rfft2(Y).permute(2, 3, 0, 1).reshape(h * wr, n, -1).contiguous()
        # ‖x‖² = Σ_f weight_f |X_f|² over the half spectrum: the columns present once in the
        # full spectrum (frequency 0, and w/2 for even w) count once, the others twice.
        weight = torch.full((wr,), 2.0, dtype=Y.dtype, device=Y.device)
        weight[0] = 1.0
        if w % 2 == 0:
            weight[-1] = 1.0
        self.weight = (weight / (h * w)).repeat(h)[:, None, None]  # (h·wr, 1, 1)

    def _residual(self, V: torch.Tensor) -> torch.Tensor:
        """``R̂(f) = Ẑ(f) V̂(f) − Ŷ(f)``, ``(h·wr, N, C)``."""
        m, c = V.shape[:2]
        Vf = torch.fft.rfft2(V, s=self.grid).permute(2, 3, 0, 1).reshape(-1, m, c)
        return torch.matmul(self.Zf, Vf).sub_(self.Yf)

    def _value(self, Rf: torch.Tensor) -> torch.Tensor:
        power = torch.view_as_real(Rf).square().sum(-1)
        return 0.5 * (power * self.weight).sum()

    def value(self, V: torch.Tensor) -> torch.Tensor:
        return self._value(self._residual(V))

    def value_and_grad(self, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, c = V.shape[:2]
        h, w = self.grid
        Rf = self._residual(V)
        # Ẑᴴ R̂ as (R̂ᴴ Ẑ)ᴴ: the conjugate transpose of the small factors only
        Gf = torch.matmul(Rf.mH, self.Zf).mH  # (h·wr, M, C)
        Gf = Gf.reshape(h, w // 2 + 1, m, c).permute(2, 3, 0, 1)
        grad = torch.fft.irfft2(Gf, s=self.grid)[..., : self.k, : self.k]
        return self._value(Rf), grad.contiguous()


class _Stats(MeanRecord):
    """Per-epoch running means: energy per image and the share of non-zero code entries."""

    KEYS = ("energy", "nnz", "entries")
    COUNT_KEY = "images"

    @property
    def nnz_share(self) -> float:
        return self.sums["nnz"] / max(self.sums["entries"], 1.0)

    def add_codes(self, energy: torch.Tensor, Z: torch.Tensor) -> None:
        """Add this process's energies ``(batch,)`` and codes ``(batch, n_atoms, H', W')``;
        the sums are added over the processes."""
        self.add_sums({"energy": energy.sum(), "nnz": (Z != 0).sum(), "entries": Z.numel()},
                      Z.shape[0])

    def values(self) -> dict[str, Any]:
        return {"mean_energy": self.mean("energy"), "nnz_share": self.nnz_share,
                "images": self.count, "entries": self.sums["entries"]}

    def restore(self, entry: dict[str, Any]) -> None:
        self.count = int(entry["images"])
        entries = float(entry["entries"])
        self.sums = {"energy": entry["mean_energy"] * self.count, "entries": entries,
                     "nnz": entry["nnz_share"] * entries}


__all__ = ["ConvDictionaryLearning", "random_kernel_patches"]
