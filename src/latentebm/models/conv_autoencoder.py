"""Convolutional sparse auto-encoder (Kavukcuoglu et al. 2010, "Learning convolutional feature
hierarchies for visual recognition").

- Encoder: ``Enc(y)_i = g_i · σ(W_i ⋆ y + b_i)``, a correlation with ``n_filters`` kernels
  ``(channels, k, k)`` (the adjoint of a convolutional dictionary, so its maps have the code
  shape), a non-linearity ``σ`` (``tanh``, or the shrinkage ``shrink_{θ_i}`` with a learned
  threshold per map) and a learned gain ``g_i`` per map.
- Decoder: linear, ``y ≈ Σ_i D_i * z_i`` with unit-norm kernels ``D_i``
  (a :class:`~latentebm.operators.ConvDictionary`).

Training modes:

- ``"psd"`` (predictive sparse decomposition): per image the codes minimise
  ``E(y, z) = ½‖y − Σ D_i * z_i‖² + λ‖z‖₁ + (β/2)‖z − Enc(y)‖²``, found by the shared FISTA
  warm-started from ``Enc(y)``; then the decoder takes a gradient step on the reconstruction
  term and the encoder on the prediction term, both at those codes.
- ``"sparse-ae"``: ``z = Enc(y)`` directly; loss ``½‖y − Dz‖² + λ‖z‖₁`` by backpropagation.

Losses are summed over pixels and averaged over the images of a batch; decoder kernels are
renormalised to unit norm after every step.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from .._docs import doc_filler, fill_doc
from .._validation import check_choice, check_int, check_lam, check_scalar, resolve_device
from ..operators import ConvDictionary, LinearOperator
from ..operators.base import batch_dot
from ..operators.conv import BOUNDARIES, correlate
from ..problem import to_output
from ..regularizers import L1, soft_threshold
from ..solvers import SolverResult, proximal_gradient
from ..training import distributed as dist
from ..training.fit_options import FitOptions, with_fit_options
from ..training.history import MeanRecord
from ..training.kernel_adam import KernelAdam
from ..training.schedules import constant_schedule, cosine_schedule
from ._base import (
    MODEL_DOCS,
    LatentModel,
    ModelConfig,
    codes_only,
    dtype_name,
    finite_result,
)
from .conv_dictionary_learning import random_kernel_patches

MODES = ("psd", "sparse-ae")
NONLINEARITIES = ("tanh", "shrink")


def _inference_limits(tol: Any, max_iter: Any) -> dict[str, Any]:
    """``tol`` (>= 0) and ``max_iter`` (>= 1) of the codes' inference, checked."""
    return {"tol": check_scalar(tol, "tol", low=0.0),
            "max_iter": check_int(max_iter, "max_iter", low=1)}


@dataclasses.dataclass(frozen=True)
class ConvSparseAutoencoderConfig(ModelConfig):
    """The one source of a :class:`ConvSparseAutoencoder`'s arguments."""

    n_filters: int
    kernel_size: int
    channels: int = 1
    lam: float = 0.1
    mode: str = "psd"
    nonlinearity: str = "tanh"
    beta: float = 1.0
    boundary: str = "full"


@fill_doc
class PredictionAugmented(LinearOperator):
    """``[D; √β I]``: turns the PSD inference problem into a Lasso for the shared solver.

    ``½‖y − Dz‖² + (β/2)‖z − e‖² = ½‖[y; √β e] − [D; √β I] z‖²``. Signals are the flattened
    pair ``(batch, C·H·W + n_atoms·H'·W')`` built by :meth:`signal`.

    Parameters
    ----------
    op : ConvDictionary
        The decoder ``D``.
    image_shape : tuple of int
        ``(C, H, W)``, the shape of one image.
    beta : float
        β ≥ 0, the weight of the prediction term.
    """

    def __init__(self, op: ConvDictionary, image_shape: tuple[int, int, int], beta: float):
        super().__init__()
        self.op = op
        self.image_shape = tuple(int(s) for s in image_shape)
        self.codes = op.code_shape(self.image_shape)
        self.n_image = math.prod(self.image_shape)
        self.beta = float(beta)
        self.root = math.sqrt(self.beta)

    @property
    def atoms(self) -> torch.Tensor:
        return self.op.atoms

    def _like(self, atoms: torch.Tensor) -> PredictionAugmented:
        return PredictionAugmented(self.op._like(atoms), self.image_shape, self.beta)

    def signal(self, Y: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
        """``[y; √β e]`` for images ``Y`` and predicted codes ``E``.

        Parameters
        ----------
        Y : torch.Tensor of shape (batch, C, H, W)
            Images.
        E : torch.Tensor of shape (batch, n_atoms, H', W')
            Predicted code maps.

        {returns_stacked_maps}
        """
        return torch.cat([Y.flatten(1), self.root * E.flatten(1)], 1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``[Dz; √β z]``, flattened.

        Parameters
        ----------
        {z_maps}

        {returns_stacked_maps}
        """
        return torch.cat([self.op.decode(z).flatten(1), self.root * z.flatten(1)], 1)

    def adjoint(self, r: torch.Tensor) -> torch.Tensor:
        """``Dᵀr_image + √β r_code``.

        Parameters
        ----------
        r : torch.Tensor of shape (batch, C·H·W + n_atoms·H'·W')
            A stacked signal-shaped tensor.

        {returns_maps}
        """
        image = r[:, : self.n_image].reshape(-1, *self.image_shape)
        code = r[:, self.n_image :].reshape(-1, *self.codes)
        return self.op.adjoint(image) + self.root * code

    def gram(self, z: torch.Tensor) -> torch.Tensor:
        """``DᵀD z + β z``.

        Parameters
        ----------
        {z_maps}

        {returns_maps}
        """
        return self.op.gram(z) + self.beta * z

    def code_shape(self, signal_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The code shape of the fixed image shape (``signal_shape`` is ignored).

        Parameters
        ----------
        signal_shape : tuple of int
            Unused.

        {returns_shape}
            ``(n_atoms, H', W')``.
        """
        return self.codes

    def check_signal(self, y: torch.Tensor, name: str = "Y") -> None:
        """Raise ``ValueError`` unless ``y`` is a batch of stacked signals.

        Parameters
        ----------
        y : torch.Tensor of shape (batch, C·H·W + n_atoms·H'·W')
            Signals to check.
        {check_name_Y}
        """
        expected = self.n_image + math.prod(self.codes)
        if y.dim() != 2 or y.shape[1] != expected:
            raise ValueError(f"{name} must have shape (batch, {expected}), got {tuple(y.shape)}")

    def check_code(self, z: torch.Tensor, name: str = "Z") -> None:
        """Raise ``ValueError`` unless ``z`` is a batch of the decoder's code maps.

        Parameters
        ----------
        z : torch.Tensor of shape (batch, n_atoms, H', W')
            Codes to check.
        {check_name_Z}
        """
        self.op.check_code(z, name)

    def lipschitz(self, signal_shape: tuple[int, ...], n_iter: int = 100) -> torch.Tensor:
        """``λ_max(DᵀD) + β`` for the fixed image shape.

        Parameters
        ----------
        signal_shape : tuple of int
            Unused (the image shape given at construction is used).
        n_iter : int, default=100
            Unused.

        Returns
        -------
        torch.Tensor of shape ()
        """
        return self.op.lipschitz(self.image_shape) + self.beta

    def normalize_(self) -> PredictionAugmented:
        self.op.normalize_()
        self.invalidate()
        return self


@doc_filler(MODEL_DOCS)
class ConvSparseAutoencoder(LatentModel):
    """Encoder ``conv → tanh|shrink → per-map gain`` and a linear convolutional decoder.

    Parameters
    ----------
    n_filters : int
        Number of code maps (kernels in each half).
    kernel_size : int
        Kernels are ``(channels, kernel_size, kernel_size)`` in both halves.
    channels : int, default=1
        Image channels.
    lam : float, default=0.1
        λ of the L1 term (pixel sums; the lecture's λ is 2λ).
    mode : {"psd", "sparse-ae"}, default="psd"
        Training mode (see the module docstring).
    nonlinearity : {"tanh", "shrink"}, default="tanh"
        The encoder's non-linearity.
    beta : float, default=1.0
        Weight of the prediction term in ``"psd"``.
    boundary : {"full", "circular"}, default="full"
        ``"full"``: code maps larger than the image by ``k − 1``; ``"circular"``: same size.
    {model_seed_device_dtype}
    """

    KIND = "conv_sparse_autoencoder"
    Config = ConvSparseAutoencoderConfig
    TRAINING_STATE = ("n_steps_", "history_", "_init_from_data")

    def __init__(
        self,
        n_filters: int,
        kernel_size: int,
        channels: int = 1,
        *,
        lam: float = 0.1,
        mode: str = "psd",
        nonlinearity: str = "tanh",
        beta: float = 1.0,
        boundary: str = "full",
        seed: int = 0,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        check_choice(mode, "mode", MODES)
        check_choice(nonlinearity, "nonlinearity", NONLINEARITIES)
        check_choice(boundary, "boundary", BOUNDARIES)
        self.config = ConvSparseAutoencoderConfig(
            n_filters=check_int(n_filters, "n_filters", low=1),
            kernel_size=check_int(kernel_size, "kernel_size", low=1),
            channels=check_int(channels, "channels", low=1), lam=check_lam(lam), mode=mode,
            nonlinearity=nonlinearity, beta=check_scalar(beta, "beta", low=0.0),
            boundary=boundary, seed=seed, dtype=dtype_name(dtype))
        device = resolve_device(device)
        gen = torch.Generator().manual_seed(self.seed)
        shape = (self.n_filters, self.channels, self.kernel_size, self.kernel_size)
        dec = torch.randn(shape, generator=gen, dtype=torch.float64)
        enc = torch.randn(shape, generator=gen, dtype=torch.float64)
        fan_in = self.channels * self.kernel_size**2
        kw = {"device": device, "dtype": dtype}
        self.decoder = nn.Parameter(_unit(dec).to(**kw))
        self.encoder = nn.Parameter((0.01 * enc / math.sqrt(fan_in)).to(**kw))
        self.bias = nn.Parameter(torch.zeros(self.n_filters, **kw))
        self.gain = nn.Parameter(torch.ones(self.n_filters, **kw))
        self.threshold = nn.Parameter(torch.full((self.n_filters,), 0.1, **kw))
        self._init_from_data = True
        self.n_steps_ = 0
        self.history_: list[dict[str, float]] = []

    # ----------------------------------------------------------------- the two halves
    def decoder_operator(self) -> ConvDictionary:
        """The decoder as a (detached) convolutional dictionary."""
        return ConvDictionary(self.decoder.detach(), boundary=self.boundary)

    def predict(self, Y: torch.Tensor) -> torch.Tensor:
        """``Enc(y)``, differentiable in the encoder's parameters.

        Parameters
        ----------
        Y : torch.Tensor of shape (batch, channels, H, W)
            Validated images.

        {returns_filter_maps}
        """
        pre = correlate(self.encoder, Y, self.boundary)
        if self.nonlinearity == "tanh":
            act = torch.tanh(pre + self.bias[None, :, None, None])
        else:
            act = soft_threshold(pre, self.threshold.clamp_min(0)[None, :, None, None])
        return self.gain[None, :, None, None] * act

    def decode_maps(self, Z: torch.Tensor) -> torch.Tensor:
        """``Σ_i D_i * z_i`` of validated code maps, differentiable in the decoder kernels
        (what training uses; :meth:`decode` is the checked entry point).

        Parameters
        ----------
        Z : torch.Tensor of shape (batch, n_filters, H', W')
            Code maps.

        {returns_images}
        """
        return ConvDictionary(self.decoder, boundary=self.boundary, check_input=False).decode(Z)

    def decode(self, Z: Any) -> Any:
        """Images ``Σ_i D_i * z_i`` of code maps ``Z``, without gradient.

        Parameters
        ----------
        Z : array-like or torch.Tensor of shape (batch, n_filters, H', W')
            Code maps (``H' = H + k − 1`` with the ``"full"`` boundary).

        Returns
        -------
        numpy.ndarray or torch.Tensor of shape (batch, channels, H, W)
            NumPy when ``Z`` is not a tensor.
        """
        Z_t, numpy_out = self.check_input(Z, "Z", ndim=4)
        self.decoder_operator().check_code(Z_t, "Z")
        with torch.no_grad():
            return to_output(finite_result(self.decode_maps(Z_t), "decoded images"), numpy_out)

    def infer(
        self, Y: torch.Tensor, *, tol: float = 1e-3, max_iter: int = 100, beta: float | None = None
    ) -> SolverResult:
        """Codes minimising the PSD energy (``beta=0``: the plain Lasso), warm-started from
        ``Enc(y)``.

        FISTA with per-image backtracking steps: a learned convolutional decoder's
        ``λ_max(DᵀD)`` (its kernels share the data's frequency band, so their spectra add up
        there) is often ten times the curvature along the codes that matter, and the fixed step
        ``1/λ_max`` left most held-out codes short of a relative gap of 1e-3 after 1000
        iterations, where the adaptive step certifies nearly all of them.

        Parameters
        ----------
        Y : torch.Tensor of shape (batch, channels, H, W)
            Validated images (no checks here).
        tol : float, default=1e-3
            Relative duality gap.
        max_iter : int, default=100
            Iteration cap.
        beta : float or None, default=None
            Weight of the prediction term; ``None`` uses the model's ``beta``.

        Returns
        -------
        SolverResult
            ``z`` ``(batch, n_filters, H', W')``, ``energy`` and ``gap`` ``(batch,)``.
        """
        beta = self.beta if beta is None else check_scalar(beta, "beta", low=0.0)
        with torch.no_grad():
            pred = self.predict(Y)
            op = self.decoder_operator()
            if beta > 0:
                aug = PredictionAugmented(op, tuple(Y.shape[1:]), beta)
                out = proximal_gradient(aug, aug.signal(Y, pred), self.lam, L1(), tol=tol,
                                        max_iter=max_iter, z0=pred, backtracking=True)
            else:
                out = proximal_gradient(op, Y, self.lam, L1(), tol=tol, max_iter=max_iter,
                                        z0=pred, backtracking=True)
        return out

    def forward(self, Y: torch.Tensor) -> torch.Tensor:
        """``Enc(Y)`` of validated images (see :meth:`predict`).

        Parameters
        ----------
        Y : torch.Tensor of shape (batch, channels, H, W)
            Images.

        {returns_filter_maps}
        """
        return self.predict(Y)

    def encode(self, Y: Any, *, method: str = "encoder", tol: float = 1e-3,
               max_iter: int = 100) -> SolverResult:
        """Code maps of images ``Y`` as a :class:`SolverResult`.

        Parameters
        ----------
        Y : array-like or torch.Tensor of shape (batch, channels, H, W)
            Images.
        method : {"encoder", "fista"}, default="encoder"
            ``"encoder"`` gives ``Enc(y)``; ``"fista"`` the optimal sparse codes of the decoder
            (plain Lasso, warm-started from ``Enc(y)``, certified).
        tol : float, default=1e-3
            Relative duality gap (``"fista"``).
        max_iter : int, default=100
            Iteration cap (``"fista"``).

        Returns
        -------
        SolverResult
            ``z`` ``(batch, n_filters, H', W')`` (NumPy arrays for NumPy input).
        """
        if method not in ("encoder", "fista"):
            raise ValueError(f"method must be 'encoder' or 'fista', got {method!r}")
        Y_t, numpy_out = self._images(Y)
        if method == "encoder":
            with torch.no_grad():
                return codes_only(self(Y_t)).to_output(numpy_out)
        return self.infer(Y_t, **_inference_limits(tol, max_iter), beta=0.0).to_output(numpy_out)

    def energy(self, Y: Any, *, tol: float = 1e-3, max_iter: int = 200) -> torch.Tensor:
        """Per-image training energy: in ``"psd"`` mode ``min_z E(y, z)`` (FISTA), in
        ``"sparse-ae"`` mode ``½‖y − D Enc(y)‖² + λ‖Enc(y)‖₁``.

        Parameters
        ----------
        Y : array-like or torch.Tensor of shape (batch, channels, H, W)
            Images.
        tol : float, default=1e-3
            Relative duality gap (``"psd"``).
        max_iter : int, default=200
            Iteration cap (``"psd"``).

        {returns_any_per_sample}
        """
        Y_t, numpy_out = self._images(Y)
        if self.mode == "psd":
            result = self.infer(Y_t, **_inference_limits(tol, max_iter))
            return to_output(result.warn_unless_converged("free energies").energy, numpy_out)
        with torch.no_grad():
            Z = self.predict(Y_t)
            r = Y_t - self.decode_maps(Z)
            E = 0.5 * batch_dot(r, r) + self.lam * Z.abs().flatten(1).sum(1)
            return to_output(finite_result(E, "energies"), numpy_out)

    # ----------------------------------------------------------------- learning
    @with_fit_options(epochs=1, batch_size=16, n="n_images", checkpoint_every=100,
                      callback_args="n_steps, model")
    def fit(
        self,
        Y: Any,
        *,
        lr: float = 1e-3,
        lr_schedule: str = "constant",
        tol: float = 1e-2,
        max_iter: int = 50,
        options: FitOptions,
    ) -> list[dict[str, float]]:
        """Train on images ``Y`` with Adam.

        ``"psd"``: FISTA codes to relative duality gap ``tol`` (at most ``max_iter``
        iterations) per batch. Decoder kernels start from random windows of the data at the
        first call. Checkpoints hold the parameters and Adam's state, and the seeded epoch order
        makes a resumed run equal an uninterrupted one.

        Parameters
        ----------
        {fit_images}
        {fit_batches}
        lr : float, default=1e-3
            Adam step.
        lr_schedule : {"constant", "cosine"}, default="constant"
            Keep ``lr`` constant, or decay it to 0 over the ``epochs``.
        tol : float, default=1e-2
            Relative duality gap of the inference (``"psd"``).
        max_iter : int, default=50
            Iteration cap of the inference (``"psd"``).
        {fit_options}

        {returns_history}

        Notes
        -----
        Under ``torchrun`` ``batch_size`` is the global batch: each process infers the codes of
        its share of it and backpropagates its share of the global mean loss through
        ``DistributedDataParallel``, so the weights and the history are those one process gets
        on the same batches. Rank 0 alone writes the checkpoint; every rank resumes from it.
        """
        Y_t, _ = self._images(Y)
        n = Y_t.shape[0]
        options = options.checked(n)
        epochs, batch_size = options.epochs, options.batch_size
        lr = check_scalar(lr, "lr", low=0.0, low_inclusive=False)
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
        limits = _inference_limits(tol, max_iter)
        tol, max_iter = limits["tol"], limits["max_iter"]
        fit_args = {"batch_size": batch_size, "n_images": n,
                    "image_shape": list(Y_t.shape[1:]), "lr": lr, "lr_schedule": lr_schedule,
                    **limits}
        if lr_schedule == "cosine":  # the schedule's length; a constant rate may train on
            fit_args["epochs"] = epochs
        optimizer = self._make_optimizer(lr)
        total = epochs * -(-n // batch_size)
        scheduler = (cosine_schedule(optimizer, total, 0.0) if lr_schedule == "cosine"
                     else constant_schedule(optimizer))
        start = (0, 0)
        if options.resuming:
            start = self.resume_from(options.checkpoint, fit_args, optimizer=optimizer,
                                     scheduler=scheduler).position
        elif self._init_from_data and self.n_steps_ == 0:
            with torch.no_grad():
                self.decoder.copy_(self._windows(Y_t))
                self._encoder_from_decoder(Y_t[: min(n, 64)])
            self._init_from_data = False

        loop = self.training_loop(
            n, options, start=start, fit_args=fit_args, desc=f"conv auto-encoder ({self.mode})",
            optimizer=optimizer, scheduler=scheduler,
        )
        # the unused one of bias / threshold gets no gradient
        terms = dist.data_parallel(_TrainingTerms(self), find_unused_parameters=True)
        with loop:
            for epoch in loop.epochs():
                stats = _Stats.open(self.history_, epoch.index, resumed=epoch.resumed)
                for b in epoch:
                    record = self._step(Y_t[dist.shard(b.idx)], b.idx.numel(), terms,
                                        optimizer, tol, max_iter)
                    self.n_steps_ += 1
                    stats.add(record)
                    loop.step_done(b, self.n_steps_, loss=record["energy"],
                                   postfix={"energy": f"{stats.mean('energy'):.4g}",
                                            "nnz": f"{stats.mean('nnz_share'):.2%}"})
                stats.close()
        return self.history_

    def _step(self, Y: torch.Tensor, n_global: int, terms: nn.Module,
              optimizer: torch.optim.Optimizer, tol: float, max_iter: int
              ) -> dict[str, torch.Tensor]:
        """One training step on this process's images ``Y`` of a global batch of
        ``n_global``, through ``terms`` (:class:`_TrainingTerms` or its DDP wrapper); returns
        this process's sums for the history."""
        batch = Y.shape[0]
        optimizer.zero_grad(set_to_none=True)
        if self.mode == "psd":
            out = self.infer(Y, tol=tol, max_iter=max_iter)
            Z, energy = out.z, out.energy
            recon, prediction, _ = terms(Y, Z)
            loss = recon.sum() + prediction.sum()
        else:
            recon, prediction, Z = terms(Y, None)
            energy = recon + self.lam * Z.abs().flatten(1).sum(1)
            loss = energy.sum()
        dist.global_mean(loss, n_global).backward()
        optimizer.step()
        with torch.no_grad():
            self.decoder.div_(_norms(self.decoder).clamp_min(torch.finfo(Y.dtype).tiny))
            self.threshold.clamp_(min=0)
            if self.nonlinearity == "shrink":
                self._normalize_encoder()
        Z = Z.detach()
        return {
            "energy": energy.detach().sum(),
            "reconstruction": recon.detach().sum(),
            "prediction": prediction.detach().sum(),
            "relative_error": (2 * recon.detach() / batch_dot(Y, Y).clamp_min(1e-30)).sum(),
            "nnz_share": (Z != 0).flatten(1).to(Z.dtype).mean(1).sum(),
            "images": torch.tensor(float(batch)),
        }

    def initial_decoder(self, Y: Any) -> Any:
        """The decoder kernels a first :meth:`fit` on the images ``Y`` starts from.

        ``n_filters`` windows of ``Y`` drawn from ``seed``, each with its mean removed and
        scaled to unit norm: untrained filters, for telling what training adds.

        Parameters
        ----------
        Y : array-like or torch.Tensor of shape (batch, channels, H, W)
            Images.

        Returns
        -------
        numpy.ndarray or torch.Tensor of shape (n_filters, channels, k, k)
            A NumPy array when ``Y`` is one.
        """
        Y_t, numpy_out = self._images(Y)
        return to_output(self._windows(Y_t), numpy_out)

    def _windows(self, Y: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed + 1)
        return random_kernel_patches(Y, self.n_filters, self.kernel_size, gen)

    def _encoder_from_decoder(self, Y: torch.Tensor) -> None:
        """Start the encoder at the decoder's adjoint (under ``no_grad``).

        ``shrink``: ``Enc(y) = g·shrink_θ(Dᵀy)`` with, per map, the threshold ``θ`` and gain
        ``g`` that best predict (least squares, keeping every map at least as dense as its
        codes) the sparse codes of the images ``Y`` under the
        initial decoder: the kernels overlap, so the right ``θ`` is far above λ, and Adam's
        small steps would take hundreds of batches to get there. ``tanh``:
        ``Enc(y) = g·tanh(s·Dᵀy)`` with ``s`` one over the standard deviation of ``Dᵀy`` on
        ``Y`` and ``g = 1/s``, so that the encoder is about ``Dᵀy`` where ``tanh`` is linear.
        """
        self.encoder.copy_(self.decoder)
        self.bias.zero_()
        if self.nonlinearity == "shrink":
            pre = correlate(self.encoder, Y, self.boundary)
            codes = proximal_gradient(self.decoder_operator(), Y, self.lam, L1(), tol=1e-2,
                                      max_iter=100, backtracking=True).z
            gain, threshold = _fit_shrink(pre, codes, self.lam)
            self.gain.copy_(gain)
            self.threshold.copy_(threshold)
            return
        spread = correlate(self.encoder, Y, self.boundary).std(dim=(0, 2, 3))
        scale = 1.0 / spread.clamp_min(torch.finfo(Y.dtype).tiny)
        self.encoder.mul_(scale[:, None, None, None])
        self.gain.copy_(1.0 / scale)

    def _normalize_encoder(self) -> None:
        """Unit-norm encoder kernels with the same ``Enc`` (under ``no_grad``, ``shrink``):
        ``g·shrink_θ(W⋆y) = (g‖W‖)·shrink_{θ/‖W‖}((W/‖W‖)⋆y)``, so Adam's step is relative to
        kernels of norm one, as it is for the decoder, instead of swamping small kernels."""
        norms = _norms(self.encoder).clamp_min(torch.finfo(self.encoder.dtype).tiny)
        self.encoder.div_(norms)
        self.threshold.div_(norms.flatten())
        self.gain.mul_(norms.flatten())

    def _make_optimizer(self, lr: float) -> torch.optim.Optimizer:
        params = [self.decoder, self.encoder, self.gain]
        params.append(self.bias if self.nonlinearity == "tanh" else self.threshold)
        return KernelAdam(params, lr=lr)

    # ----------------------------------------------------------------- helpers
    def _images(self, Y: Any) -> tuple[torch.Tensor, bool]:
        Y_t, numpy_out = self.check_input(Y, "Y", ndim=4, signals=True)
        self.decoder_operator().check_signal(Y_t, "Y")
        return Y_t, numpy_out


def _fit_shrink(pre: torch.Tensor, codes: torch.Tensor, lam: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per map, the gain ``g`` and threshold ``θ`` (among quantiles of ``|pre|``, at least
    ``lam``) minimising ``‖codes − g·shrink_θ(pre)‖²``, among the thresholds that leave the
    map at least as often non-zero as its codes.

    Least squares alone switches off a map whose codes it cannot predict well (a threshold
    above nearly every response, a gain near zero): such a map passes no gradient to its
    kernel, which then stays behind while its decoder kernel keeps learning (on the 64-filter
    sweep, five maps ended with encoder/decoder similarity 0.2-0.5).

    Parameters
    ----------
    pre : torch.Tensor of shape (batch, n_maps, H', W')
        Encoder pre-activations.
    codes : torch.Tensor of shape (batch, n_maps, H', W')
        Target codes.
    lam : float
        The smallest threshold tried.

    Returns
    -------
    gain, threshold : torch.Tensor of shape (n_maps,)
    """
    x = pre.transpose(0, 1).flatten(1)  # (n_maps, n)
    z = codes.transpose(0, 1).flatten(1)
    stride = max(1, math.ceil(x.numel() / 2**22))  # torch.quantile's input is limited
    levels = torch.linspace(0.5, 0.999, 40, dtype=torch.float64, device=x.device)
    cand = torch.quantile(x[:, ::stride].abs().double(), levels, dim=1).T.to(x.dtype)
    cand = torch.cat([cand.clamp_min(lam), cand.new_full((len(x), 1), lam)], 1)  # (n_maps, T)
    ss = torch.empty_like(cand)
    sz = torch.empty_like(cand)
    for t in range(cand.shape[1]):  # one (n_maps, n) temporary at a time
        s = soft_threshold(x, cand[:, t : t + 1])
        ss[:, t] = s.pow(2).sum(1)
        sz[:, t] = (s * z).sum(1)
    gain = sz / ss.clamp_min(torch.finfo(x.dtype).tiny)
    err = z.pow(2).sum(1, keepdim=True) - gain * sz  # residual of the least-squares gain
    sample = x[:, ::stride].abs().sort(dim=1).values
    share = (z[:, ::stride] != 0).to(x.dtype).mean(1)
    at = ((1.0 - share) * (sample.shape[1] - 1)).round().long()
    cap = sample.gather(1, at[:, None])  # the threshold that keeps the codes' share non-zero
    too_sparse = cand > cap
    too_sparse[:, -1] = False  # λ itself stays a candidate
    err[too_sparse] = torch.inf
    best = err.argmin(1)
    rows = torch.arange(len(x), device=x.device)
    return gain[rows, best].clamp_min(0.0), cand[rows, best]


def _norms(K: torch.Tensor) -> torch.Tensor:
    return K.flatten(1).norm(dim=1)[:, None, None, None]


def _unit(K: torch.Tensor) -> torch.Tensor:
    return K / _norms(K)


class _TrainingTerms(nn.Module):
    """A :class:`ConvSparseAutoencoder`'s per-image training terms as one module, so that
    ``DistributedDataParallel`` sees every parameter of a step in its ``forward``.

    Parameters
    ----------
    model : ConvSparseAutoencoder
        The model being trained (held, not copied).
    """

    def __init__(self, model: ConvSparseAutoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, Y: torch.Tensor, Z: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``½‖y − Dz‖²`` and ``(β/2)‖z − Enc(y)‖²`` per image at the codes ``Z`` (``"psd"``),
        or at ``z = Enc(y)`` when ``Z`` is None (``"sparse-ae"``, prediction term zero).

        Parameters
        ----------
        Y : torch.Tensor of shape (batch, channels, H, W)
            Validated images.
        Z : torch.Tensor of shape (batch, n_filters, H', W') or None
            Inferred codes, or None to use the encoder's.

        Returns
        -------
        tuple of torch.Tensor
            Reconstruction ``(batch,)``, prediction ``(batch,)`` and the codes used
            ``(batch, n_filters, H', W')``.
        """
        model = self.model
        if Z is None:
            Z = model(Y)
            prediction = None
        else:
            D = Z - model(Y)
            prediction = 0.5 * model.beta * batch_dot(D, D)
        r = Y - model.decode_maps(Z)
        recon = 0.5 * batch_dot(r, r)
        return recon, torch.zeros_like(recon) if prediction is None else prediction, Z


class _Stats(MeanRecord):
    """Per-epoch means of the step records (per-batch sums), ``mean_<key>`` in the history."""

    KEYS = ("energy", "reconstruction", "prediction", "relative_error", "nnz_share")
    PREFIX = "mean_"
    COUNT_KEY = "images"

    def add(self, record: dict[str, torch.Tensor]) -> dict[str, float]:
        return self.add_sums(record, float(record["images"]))

    def entry(self, partial: bool, seconds: float) -> dict[str, Any]:
        values = self.values()  # this history has always listed the means last
        return {"epoch": self.epoch, "images": values.pop("images"), "partial": partial,
                "seconds": seconds, **values}


__all__ = ["ConvSparseAutoencoder", "PredictionAugmented", "MODES",
           "NONLINEARITIES"]
