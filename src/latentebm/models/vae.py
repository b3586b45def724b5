"""The variational auto-encoder as a regularized latent-variable EBM.

Energy of an observation with a noisy code ("fuzzy ball") ``z = μ(x) + σ(x) ⊙ ε``:

    loss = E_q[−log p(x | z)] + β · KL(N(μ, σ²) ‖ N(0, I)),   KL = ½ Σ_d (μ² + σ² − log σ² − 1)

**Reduction.** Both terms are *summed* over pixels and latent dimensions (nats per image) and
*averaged* over the batch: ``loss = mean_b [rec_b + β kl_b]``. With β = 1 the loss is the
negative ELBO, an upper bound on ``−log p(x)``. β is the strength of the KL "spring".

**Importance-weighted objective** (``objective="iwae"``, Burda, Grosse & Salakhutdinov 2016):
``loss = −mean_b log (1/k) Σ_j w_j`` with ``log w_j = log p(x | z_j) + β (log p(z_j) −
log q(z_j | x))`` and ``z_j ~ q(z | x)``: a tighter bound on ``−log p(x)`` as ``k`` grows
(``k = 1`` is the ELBO with a sampled KL term).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .._docs import doc_filler
from .._validation import check_choice, check_int, check_scalar, resolve_device
from ..problem import to_output
from ..solvers import SolverResult
from ..training import distributed as dist
from ..training.denormals import denormals_flushed
from ..training.fit_options import check_hooks, trains_with_gradients
from ..training.loop import MinibatchLoop, resuming
from ..training.schedules import constant_schedule, cosine_schedule
from ._base import MODEL_DOCS, LatentModel, ModelConfig, codes_only, dtype_name
from .vae_parts import (
    LIKELIHOODS,
    Decoder,
    Encoder,
    LogMeanExp,
    bernoulli_log_likelihood,
    binarize,
    check_architecture,
    gaussian_log_likelihood,
    kl_standard_normal,
    log_normal_diag,
    log_standard_normal,
)

#: Training objectives: the ELBO (one sample, analytic KL) or Burda et al.'s importance-weighted
#: bound with ``k`` samples per image.
OBJECTIVES = ("elbo", "iwae")
#: Learning-rate schedules of :meth:`VAE.fit`.
LR_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class VAEConfig(ModelConfig):
    """The one source of a :class:`VAE`'s arguments."""

    input_shape: tuple[int, ...]
    latent_dim: int
    encoder: str = "mlp"
    likelihood: str = "bernoulli"
    beta: float = 1.0
    learn_variance: bool = True
    fixed_sigma: float = 1.0
    hidden: tuple[int, ...] = (400,)
    obs_sigma: float | None = None


class VAEOutput(NamedTuple):
    """What :meth:`VAE.forward` returns; scalars are means over the batch of per-image sums."""

    loss: torch.Tensor  # reconstruction + β·kl
    reconstruction: torch.Tensor  # E_q[−log p(x|z)], nats per image
    kl: torch.Tensor  # KL(q(z|x) ‖ p(z)), nats per image
    kl_per_dim: torch.Tensor  # (latent_dim,), batch mean of each dimension's KL
    mu: torch.Tensor  # (batch, latent_dim)
    logvar: torch.Tensor  # (batch, latent_dim)


class LogLikelihood(NamedTuple):
    """Importance-sampled ``log p(x)`` per image and the Monte-Carlo standard error of each."""

    log_px: torch.Tensor  # (batch,)
    stderr: torch.Tensor  # (batch,)
    k: int

    def summary(self) -> dict[str, float]:
        """Mean NLL in nats with its Monte-Carlo SE and the SE over the images drawn."""
        n = self.log_px.numel()
        return {
            "nll": float(-self.log_px.mean()),
            "se_mc": float(self.stderr.square().sum().sqrt() / n),
            "se_data": float(self.log_px.std() / math.sqrt(n)) if n > 1 else float("nan"),
            "k": self.k,
            "n": n,
        }


@doc_filler(MODEL_DOCS)
class VAE(LatentModel):
    """A VAE on inputs of shape ``input_shape`` with a ``latent_dim``-dimensional Gaussian code.

    Weights are initialised from ``seed``; inputs may be ``(batch, *input_shape)`` or flat
    ``(batch, prod(input_shape))``.

    Parameters
    ----------
    input_shape : int or sequence of int
        Shape of one input, e.g. ``(28, 28)`` or ``784``.
    latent_dim : int
        Dimension of the code.
    encoder : {"mlp", "conv", "linear"}, default="mlp"
        ``"mlp"``: ``hidden`` ReLU layers (the default ``(400,)`` gives 784-400-20);
        ``"conv"``: two stride-2 convolutions, then the MLP (sides must be multiples of 4);
        ``"linear"``: affine encoder and decoder (probabilistic PCA).
    likelihood : {"bernoulli", "gaussian"}, default="bernoulli"
        ``"bernoulli"``: pixels in [0, 1]; ``"gaussian"``: pixel noise σ learned as one scalar,
        or fixed to ``obs_sigma``.
    beta : float, default=1.0
        Weight β ≥ 0 of the KL term.
    learn_variance : bool, default=True
        ``False`` fixes the posterior σ ("the size of the balls") to ``fixed_sigma`` instead of
        learning it per input and dimension.
    fixed_sigma : float, default=1.0
        The posterior σ when ``learn_variance=False``.
    hidden : int or sequence of int, default=(400,)
        Hidden layer sizes of the MLP (at least one unless ``encoder="linear"``).
    obs_sigma : float or None, default=None
        Fixed pixel noise σ of the Gaussian likelihood; ``None`` learns it.
    {model_seed_device_dtype}
    """

    KIND = "vae"
    Config = VAEConfig
    TRAINING_STATE = ("n_steps_", "history_")

    @property
    def encoder(self) -> nn.Module:
        """The encoder network (``config.encoder`` names its kind)."""
        return self._modules["encoder"]

    def __init__(
        self,
        input_shape: int | Sequence[int],
        latent_dim: int,
        *,
        encoder: str = "mlp",
        likelihood: str = "bernoulli",
        beta: float = 1.0,
        learn_variance: bool = True,
        fixed_sigma: float = 1.0,
        hidden: Sequence[int] = (400,),
        obs_sigma: float | None = None,
        seed: int = 0,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        input_shape = _check_shape(input_shape)
        check_architecture(input_shape, encoder)
        check_choice(likelihood, "likelihood", LIKELIHOODS)
        if obs_sigma is not None and likelihood != "gaussian":
            raise ValueError(f"obs_sigma fixes the pixel noise of likelihood='gaussian'; "
                             f"likelihood={likelihood!r} has none")
        if not isinstance(learn_variance, bool):
            raise TypeError(f"learn_variance must be a bool, got {type(learn_variance).__name__}")
        if isinstance(hidden, (int, np.integer)) and not isinstance(hidden, bool):
            hidden = (hidden,)  # one hidden layer
        elif isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
            raise TypeError(f"hidden must be a layer size or a sequence of them, got "
                            f"{type(hidden).__name__}")
        hidden = tuple(check_int(h, "hidden", low=1) for h in hidden)
        if encoder != "linear" and not hidden:
            raise ValueError(f"hidden must name at least one layer size for encoder={encoder!r}")
        self.config = VAEConfig(
            input_shape=input_shape, latent_dim=check_int(latent_dim, "latent_dim", low=1),
            encoder=encoder, likelihood=likelihood, beta=check_scalar(beta, "beta", low=0.0),
            learn_variance=learn_variance,
            fixed_sigma=check_scalar(fixed_sigma, "fixed_sigma", low=0.0, low_inclusive=False),
            hidden=hidden,
            obs_sigma=None if obs_sigma is None
            else check_scalar(obs_sigma, "obs_sigma", low=0.0, low_inclusive=False),
            seed=seed, dtype=dtype_name(dtype))
        self.n_features = math.prod(self.input_shape)
        default = torch.get_default_dtype()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            # the weights a seed gives are drawn in float32, whatever the global default
            torch.set_default_dtype(torch.float32)
            try:
                self.encoder = Encoder(self.config)
                self.decoder = Decoder(self.config)
            finally:
                torch.set_default_dtype(default)
        self.to(device=resolve_device(device), dtype=dtype)
        self.n_steps_ = 0
        self.history_: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ the model
    def encode(self, x: Any) -> SolverResult:
        """The posterior means ``μ(x)`` as a :class:`SolverResult` (``z``), without gradient;
        :meth:`posterior` gives ``(μ, log σ²)``.

        Parameters
        ----------
        x : array-like or torch.Tensor of shape (batch, *input_shape) or (batch, n_features)
            Images.

        Returns
        -------
        SolverResult
            Only ``z`` ``(batch, latent_dim)`` (NumPy when ``x`` is not a tensor).
        """
        numpy_out = not isinstance(x, torch.Tensor)
        with torch.no_grad():
            mu = self.encoder(self._check_x(x))[0]
        return codes_only(to_output(mu, numpy_out))

    def posterior(self, x: Any, *, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ, log σ²)`` of many images, in batches and without gradients.

        Parameters
        ----------
        {vae_images_batches}

        Returns
        -------
        mu : torch.Tensor of shape (n, latent_dim)
        logvar : torch.Tensor of shape (n, latent_dim)
        """
        x = self._check_x(x)
        batch_size = check_int(batch_size, "batch_size", low=1)
        with torch.no_grad():
            parts = [self.encoder(xb) for xb in x.split(batch_size)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def decode(self, z: Any) -> Any:
        """Mean of ``p(x | z)`` (pixel probabilities for Bernoulli).

        Parameters
        ----------
        z : array-like or torch.Tensor of shape (batch, latent_dim)
            Codes.

        Returns
        -------
        numpy.ndarray or torch.Tensor of shape (batch, *input_shape)
            NumPy when ``z`` is not a tensor (as :meth:`encode` returns codes); a tensor keeps
            its graph to the decoder's parameters.
        """
        out = self.decoder(self._check_z(z))
        mean = torch.sigmoid(out) if self.likelihood == "bernoulli" else out
        return to_output(mean, not isinstance(z, torch.Tensor))

    def forward(
        self, x: torch.Tensor, *, beta: float | None = None,
        generator: torch.Generator | None = None, k: int = 1, objective: str = "elbo",
        noise: torch.Tensor | None = None,
    ) -> VAEOutput:
        """The training loss of validated images: the negative ELBO (β-weighted KL) from one
        reparameterised sample, or with ``objective="iwae"`` the negative importance-weighted
        bound from ``k`` samples; see the module docstring for the reduction.

        Parameters
        ----------
        x : torch.Tensor of shape (batch, *input_shape)
            Validated images.
        beta : float or None, default=None
            Weight of the KL term; ``None`` uses the model's ``beta``.
        generator : torch.Generator or None, default=None
            Source of the reparameterisation noise.
        k : int, default=1
            Samples per image of the importance-weighted bound.
        objective : {"elbo", "iwae"}, default="elbo"
            The bound whose negative is the loss.
        noise : torch.Tensor or None, default=None
            The standard normal draws ε of the reparameterisation, ``(batch, latent_dim)`` for
            the ELBO or ``(k, batch, latent_dim)`` for the importance-weighted bound, instead
            of drawing them from ``generator`` (distributed training draws them for the whole
            global batch, so that every process uses its rows of the same draw).

        Returns
        -------
        VAEOutput
            Batch means of ``loss``, ``reconstruction`` and ``kl``, ``kl_per_dim``
            ``(latent_dim,)``, and ``mu``, ``logvar`` ``(batch, latent_dim)``.
        """
        return (self._iwae_loss if objective == "iwae" else self._loss)(
            x, self.beta if beta is None else beta, generator, k, noise)

    def loss(self, x: Any, *, beta: float | None = None,
             generator: torch.Generator | None = None, k: int = 1,
             objective: str = "elbo") -> VAEOutput:
        """:meth:`forward` on validated ``x`` (any accepted shape, NumPy or tensor).

        Parameters
        ----------
        x : array-like or torch.Tensor of shape (batch, *input_shape) or (batch, n_features)
            Images (in [0, 1] for a Bernoulli likelihood).
        beta : float or None, default=None
            Weight of the KL term; ``None`` uses the model's ``beta``.
        generator : torch.Generator or None, default=None
            Source of the reparameterisation noise.
        k : int, default=1
            Samples per image for ``objective="iwae"`` (``k = 1`` is the ELBO with a sampled
            KL term).
        objective : {"elbo", "iwae"}, default="elbo"

        Returns
        -------
        VAEOutput
            As :meth:`forward`.
        """
        b = self.beta if beta is None else check_scalar(beta, "beta", low=0.0)
        k, objective = _check_objective(objective, k)
        return self(self._check_x(x), beta=b, generator=generator, k=k, objective=objective)

    def iwae_bound(self, x: Any, k: int, *, batch_size: int = 100,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-image importance-weighted bound ``log (1/k) Σ_j p(x, z_j) / q(z_j | x)``
        (Burda et al. 2016), ``(batch,)``, without gradients; ``k = 1`` is the ELBO with a
        sampled KL term, and its expectation rises with ``k`` toward ``log p(x)``.

        Parameters
        ----------
        x : array or tensor ``(batch, *input_shape)``
            Images.
        k : int
            Samples per image.
        batch_size : int
            Images per forward pass.
        generator : torch.Generator, optional
            Source of the samples.

        Returns
        -------
        torch.Tensor ``(batch,)``
        """
        x = self._check_x(x)
        k = check_int(k, "k", low=1)
        batch_size = check_int(batch_size, "batch_size", low=1)
        with torch.no_grad(), denormals_flushed():
            return torch.cat([self._log_weights(xb, 1.0, generator, k)[0].logsumexp(0)
                              - math.log(k) for xb in x.split(batch_size)])

    def elbo(
        self,
        x: Any,
        *,
        n_samples: int = 1,
        batch_size: int = 1000,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Per-image ELBO (β = 1, whatever the training β), averaged over ``n_samples``
        reparameterised draws; ``log p(x) ≥ ELBO``.

        Parameters
        ----------
        {vae_images}
        n_samples : int, default=1
            Draws per image.
        {vae_batch_size}
        generator : torch.Generator or None, default=None
            Source of the reparameterisation noise.

        Returns
        -------
        torch.Tensor of shape (n,)
        """
        x = self._check_x(x)
        n_samples = check_int(n_samples, "n_samples", low=1)
        batch_size = check_int(batch_size, "batch_size", low=1)
        out = []
        with torch.no_grad(), denormals_flushed():
            for xb in x.split(batch_size):
                mu, logvar = self.encoder(xb)
                kl = kl_standard_normal(mu, logvar).sum(-1)
                z = self._reparameterize(mu, logvar, generator, n_samples)
                rec = self._log_px_given_z(z, xb).mean(0)
                out.append(rec - kl)
        return torch.cat(out)

    def log_likelihood(
        self,
        x: Any,
        k: int = 5000,
        *,
        chunk: int = 500,
        batch_size: int = 50,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> LogLikelihood:
        """Importance-sampled ``log p(x) ≈ log (1/k) Σ_j p(x|z_j) p(z_j) / q(z_j|x)``,
        ``z_j ~ q(z|x)`` (Burda et al. 2016's bound, tight as ``k → ∞``), with the delta-method
        standard error of each estimate. Works through ``batch_size`` images × ``chunk``
        samples at a time, so memory does not grow with ``k``.

        Parameters
        ----------
        {vae_images}
        k : int, default=5000
            Importance samples per image.
        chunk : int, default=500
            Samples drawn at a time (at most ``k``).
        batch_size : int, default=50
            Images at a time.
        generator : torch.Generator or None, default=None
            Source of the samples.
        progress : bool, default=False
            Show a progress bar.

        Returns
        -------
        LogLikelihood
            ``log_px`` and ``stderr`` ``(n,)`` (NaN for ``k = 1``, where one draw tells
            nothing of the spread), and ``k``.
        """
        x = self._check_x(x)
        k = check_int(k, "k", low=1)
        chunk = min(check_int(chunk, "chunk", low=1), k)
        batch_size = check_int(batch_size, "batch_size", low=1)
        log_px, stderr = [], []
        bar = tqdm(total=x.shape[0], disable=not progress, desc="log p(x)", unit="img", leave=False)
        with torch.no_grad(), denormals_flushed():
            for xb in x.split(batch_size):
                mu, logvar = self.encoder(xb)
                acc = LogMeanExp()
                for start in range(0, k, chunk):
                    z = self._reparameterize(mu, logvar, generator, min(chunk, k - start))
                    log_w = (
                        self._log_px_given_z(z, xb)
                        + log_standard_normal(z)
                        - log_normal_diag(z, mu, logvar)
                    )
                    acc.add(log_w)
                lp, se = acc.result()
                log_px.append(lp)
                stderr.append(se)
                bar.update(xb.shape[0])
        bar.close()
        return LogLikelihood(torch.cat(log_px), torch.cat(stderr), k)

    def kl_per_dim(self, x: Any, *, batch_size: int = 1000) -> torch.Tensor:
        """``E_x KL(q(z_d|x) ‖ N(0, 1))`` for each latent dimension.

        Parameters
        ----------
        {vae_images_batches}

        Returns
        -------
        torch.Tensor of shape (latent_dim,)
        """
        mu, logvar = self.posterior(x, batch_size=batch_size)
        return kl_standard_normal(mu, logvar).mean(0)

    def active_units(self, x: Any, *, threshold: float = 0.01, batch_size: int = 1000) -> int:
        """Number of dimensions with ``Var_x E[z_d | x] > threshold`` (Burda et al. 2016).

        Parameters
        ----------
        x : array-like or torch.Tensor of shape (n, *input_shape) or (n, n_features)
            Images, at least 2.
        threshold : float, default=0.01
            Variance above which a dimension counts as active.
        {vae_batch_size}

        Returns
        -------
        int
        """
        threshold = check_scalar(threshold, "threshold", low=0.0)
        mu, _ = self.posterior(x, batch_size=batch_size)
        if mu.shape[0] < 2:
            raise ValueError("x must hold at least 2 images to measure a variance over x")
        return int((mu.var(0) > threshold).sum())

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decoded means of ``n`` codes drawn from the prior.

        Parameters
        ----------
        n : int
            Number of samples.
        generator : torch.Generator or None, default=None
            Source of the codes, on the model's device.

        Returns
        -------
        torch.Tensor of shape (n, *input_shape)
        """
        n = check_int(n, "n", low=1)
        with torch.no_grad():
            z = torch.randn(
                n, self.latent_dim, generator=generator, device=self.device, dtype=self.dtype
            )
            return self.decode(z)

    # ------------------------------------------------------------------ learning
    @trains_with_gradients
    def fit(
        self,
        X: Any,
        *,
        epochs: int = 1,
        batch_size: int = 128,
        lr: float = 1e-3,
        warmup_epochs: float = 0.0,
        dynamic_binarization: bool = False,
        objective: str = "elbo",
        k: int = 1,
        lr_schedule: str = "constant",
        schedule_epochs: int | None = None,
        validation: Any = None,
        nll_k: int = 0,
        nll_every: int = 1,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
        resume: bool = False,
        check_every: int = 50,
        callback: Callable[[int, VAE], None] | None = None,
        on_epoch_end: Callable[[VAE, dict[str, Any]], None] | None = None,
        progress: bool = True,
    ) -> list[dict[str, Any]]:
        """Train on ``X`` with Adam(``lr``) on mini-batches.

        Every ``check_every`` steps, and before each save, the loss and weights are checked:
        NaN/inf stops training with ``FloatingPointError`` and the last good checkpoint is
        left in place.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n, *input_shape) or (n, n_features)
            Training images.
        epochs : int, default=1
            Total number of epochs (a resumed run continues up to it).
        batch_size : int, default=128
            Mini-batch size (clipped to ``n``).
        lr : float, default=1e-3
            Adam learning rate.
        warmup_epochs : float, default=0.0
            β rises linearly from 0 to ``self.beta`` over that many epochs (0: no warm-up).
        dynamic_binarization : bool, default=False
            Each batch is a fresh Bernoulli draw with probabilities ``X`` (seeded by the step, so
            a resumed run repeats it exactly); Bernoulli likelihood only.
        objective : {"elbo", "iwae"}, default="elbo"
            The ELBO (one sample) or the importance-weighted bound with ``k`` samples per
            image (β then weights ``log p(z) − log q(z|x)`` in each log-weight).
        k : int, default=1
            Samples per image of the importance-weighted bound (``objective="iwae"`` only).
        lr_schedule : {"constant", "cosine"}, default="constant"
            Adam's learning rate kept, or decayed to zero by a cosine over ``schedule_epochs``.
        schedule_epochs : int or None, default=None
            Length of the cosine schedule in epochs (default ``epochs``; give the whole budget
            when training in several calls).
        validation : array-like, torch.Tensor or None, default=None
            Images whose mean −ELBO is recorded after every epoch.
        nll_k : int, default=0
            With ``nll_k > 0``, the importance-sampled NLL of ``validation`` from ``nll_k``
            samples every ``nll_every`` epochs (``val_nll`` in the history, shown in the
            progress bar).
        nll_every : int, default=1
            Epochs between two NLL estimates.
        checkpoint : str, os.PathLike or None, default=None
            Safetensors path written every ``checkpoint_every`` steps, at the end and on Ctrl-C.
        checkpoint_every : int or None, default=None
            Steps between checkpoints; ``None``: every epoch.
        resume : bool, default=False
            Continue from ``checkpoint`` (model, Adam state, position, history), giving the same
            result as an uninterrupted run.
        check_every : int, default=50
            Steps between divergence checks (and progress-bar updates).
        callback : callable or None, default=None
            ``callback(step, model)`` after every step.
        on_epoch_end : callable or None, default=None
            ``on_epoch_end(model, entry)`` may add JSON-able values to an epoch's history entry
            before it is checkpointed.
        progress : bool, default=True
            Show a progress bar.

        {returns_history}
        """
        X_t = self._check_x(X, "X")
        epochs = check_int(epochs, "epochs", low=1)
        batch_size = min(check_int(batch_size, "batch_size", low=1), X_t.shape[0])
        lr = check_scalar(lr, "lr", low=0.0, low_inclusive=False)
        warmup_epochs = check_scalar(warmup_epochs, "warmup_epochs", low=0.0)
        check_every = check_int(check_every, "check_every", low=1)
        if not isinstance(dynamic_binarization, bool):
            raise TypeError("dynamic_binarization must be a bool")
        if dynamic_binarization and self.likelihood != "bernoulli":
            raise ValueError("dynamic_binarization needs likelihood='bernoulli'")
        k, objective = _check_objective(objective, k)
        check_choice(lr_schedule, "lr_schedule", LR_SCHEDULES)
        schedule_epochs = epochs if schedule_epochs is None else check_int(
            schedule_epochs, "schedule_epochs", low=1)
        if lr_schedule == "cosine" and schedule_epochs < epochs:  # the cosine would rise again
            raise ValueError(f"schedule_epochs ({schedule_epochs}) must be at least epochs "
                             f"({epochs}): the cosine schedule decays to zero over it")
        check_hooks(checkpoint, callback=callback, on_epoch_end=on_epoch_end)
        nll_k = check_int(nll_k, "nll_k", low=0)
        nll_every = check_int(nll_every, "nll_every", low=1)
        X_val = None if validation is None else self._check_x(validation, "validation")
        if nll_k and X_val is None:
            raise ValueError("nll_k > 0 needs validation images")
        n = X_t.shape[0]
        steps_per_epoch = math.ceil(n / batch_size)
        every = (
            steps_per_epoch
            if checkpoint_every is None
            else check_int(checkpoint_every, "checkpoint_every", low=1)
        )
        fit_args = {"batch_size": batch_size, "n_samples": n, "lr": lr,
                    "warmup_epochs": warmup_epochs,
                    "dynamic_binarization": dynamic_binarization, "objective": objective,
                    "k": k, "lr_schedule": lr_schedule}
        opt = _adam(self.parameters(), lr)
        if lr_schedule == "cosine":
            fit_args["schedule_epochs"] = schedule_epochs
            scheduler = cosine_schedule(opt, schedule_epochs * steps_per_epoch)
        else:
            scheduler = constant_schedule(opt)
        sums = torch.zeros(4, device=self.device, dtype=torch.float64)  # loss, rec, kl, count
        start, seconds_before = (0, 0), 0.0
        if resuming(resume, checkpoint):
            state = self.resume_from(checkpoint, fit_args, optimizer=opt, scheduler=scheduler)
            start = state.position
            if dist.is_main():  # the saved sums are over every process: counted once
                sums.copy_(state.extra["running"])
            seconds_before = float(state.extra["epoch_seconds"])
        warmup_steps = warmup_epochs * steps_per_epoch
        gen = torch.Generator(device=self.device)
        clock = {"epoch_start": time.perf_counter(), "before": seconds_before}

        @dist.on_main
        def write(epoch: int, batch: int, running: torch.Tensor) -> None:
            seconds = clock["before"] + time.perf_counter() - clock["epoch_start"] if batch else 0.0
            self.write_training_checkpoint(
                checkpoint, fit_args, (epoch, batch), optimizer=opt, scheduler=scheduler,
                extra={"running": running, "epoch_seconds": torch.tensor(seconds)})

        def save(epoch: int, batch: int) -> None:
            write(epoch, batch, dist.all_reduce_(sums.clone(), what="of the epoch sums"))

        loop = MinibatchLoop(
            n, batch_size, epochs, seed=self.seed, device=self.device, start=start,
            checkpoint=checkpoint, save=save, checkpoint_every=every, check_every=check_every,
            watch=self, optimizer=opt, scheduler=scheduler, callback=callback, desc="vae",
            progress=progress and dist.is_main(),
        )
        model = dist.data_parallel(self, find_unused_parameters=True)
        self.train()  # the fit's wrapper puts back the caller's mode
        with loop:
            for epoch in loop.epochs():
                clock["epoch_start"] = time.perf_counter()
                for b in epoch:
                    gen.manual_seed(self.seed * 1_000_003 + self.n_steps_)
                    xb = X_t[b.idx]
                    if dynamic_binarization:
                        xb = binarize(xb, gen)
                    beta = self.beta
                    if warmup_steps > 0:
                        beta *= min(1.0, (self.n_steps_ + 1) / warmup_steps)
                    loss = self._train_step(model, opt, xb, beta, gen, sums, objective, k)
                    if b.batch + 1 == epoch.steps_per_epoch:
                        self._close_epoch(epoch.index, sums, beta, clock, X_val, on_epoch_end,
                                          nll_k if (epoch.index + 1) % nll_every == 0 else 0)
                    postfix = None
                    if self.n_steps_ % check_every == 0 and sums[3] > 0:
                        postfix = {"loss": f"{float(sums[0] / sums[3]):.2f}",
                                   "beta": f"{beta:.3g}"}
                        last_nll = [h["val_nll"] for h in self.history_ if "val_nll" in h]
                        if last_nll:
                            postfix["val_nll"] = f"{last_nll[-1]:.2f}"
                    loop.step_done(b, self.n_steps_, loss=loss, postfix=postfix)
        return self.history_

    # ------------------------------------------------------------------ internals
    def _loss(self, x: torch.Tensor, beta: float, generator: torch.Generator | None,
              k: int = 1, noise: torch.Tensor | None = None) -> VAEOutput:
        mu, logvar = self.encoder(x)
        z = self._reparameterize(mu, logvar, generator, None, noise)
        rec = -self._log_px_given_z(z, x).mean()
        kl_dims = kl_standard_normal(mu, logvar).mean(0)
        kl = kl_dims.sum()
        return VAEOutput(rec + beta * kl, rec, kl, kl_dims, mu, logvar)

    def _log_weights(self, x: torch.Tensor, beta: float, generator: torch.Generator | None,
                     k: int, noise: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``log p(x|z_j) + β (log p(z_j) − log q(z_j|x))`` ``(k, batch)`` for ``k`` samples
        per image, with ``log p(x|z_j)`` ``(k, batch)`` and the posterior ``(μ, log σ²)``."""
        mu, logvar = self.encoder(x)
        z = self._reparameterize(mu, logvar, generator, k, noise)
        log_px_z = self._log_px_given_z(z, x)
        return (log_px_z + beta * (log_standard_normal(z) - log_normal_diag(z, mu, logvar)),
                log_px_z, mu, logvar)

    def _iwae_loss(self, x: torch.Tensor, beta: float, generator: torch.Generator | None,
                   k: int, noise: torch.Tensor | None = None) -> VAEOutput:
        log_w, log_px_z, mu, logvar = self._log_weights(x, beta, generator, k, noise)
        bound = log_w.logsumexp(0) - math.log(k)
        kl_dims = kl_standard_normal(mu, logvar).mean(0)
        return VAEOutput(-bound.mean(), -log_px_z.mean(), kl_dims.sum(), kl_dims, mu, logvar)

    def _train_step(
        self,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        x: torch.Tensor,
        beta: float,
        generator: torch.Generator,
        sums: torch.Tensor,
        objective: str,
        k: int,
    ) -> torch.Tensor:
        """One Adam step through ``model`` (this VAE or its ``DistributedDataParallel``
        wrapper) on the global batch ``x``: this process takes its rows of ``x`` and of one
        noise draw for the whole batch, and backpropagates its share of the global mean, so
        that the averaged gradient is the one-process gradient. Accumulates this process's
        (loss, rec, kl, count) sums into ``sums`` on the device (no host sync) and returns
        the detached local loss."""
        n_global = x.shape[0]
        noise_shape = (n_global, self.latent_dim) if objective == "elbo" else (
            k, n_global, self.latent_dim)
        noise = torch.randn(noise_shape, generator=generator, device=x.device, dtype=x.dtype)
        start, stop = dist.shard_bounds(n_global)
        x = x[start:stop]
        out = model(x, beta=beta, k=k, objective=objective, noise=noise[..., start:stop, :])
        if x.shape[0] == 0:  # an empty share of a small last batch: its means are NaN, its sums 0
            out = VAEOutput(*(t.nan_to_num(0.0) for t in out))
        opt.zero_grad(set_to_none=True)
        dist.global_mean(out.loss * x.shape[0], n_global).backward()
        opt.step()
        self.n_steps_ += 1
        with torch.no_grad():
            m = out.loss.new_tensor(x.shape[0])
            sums += torch.stack([out.loss * m, out.reconstruction * m, out.kl * m, m]).double()
        return out.loss.detach()

    def _reparameterize(
        self,
        mu: torch.Tensor,
        logvar: torch.Tensor,
        generator: torch.Generator | None,
        n_samples: int | None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``μ + σ ε`` with ε ``noise`` or drawn from ``generator``; with ``n_samples``,
        ``(n_samples, batch, latent_dim)``."""
        shape = mu.shape if n_samples is None else (n_samples, *mu.shape)
        eps = noise if noise is not None else torch.randn(
            shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def _log_px_given_z(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = self.decoder(z)
        if self.likelihood == "bernoulli":
            return bernoulli_log_likelihood(out, x)
        return gaussian_log_likelihood(out, self.decoder.log_sigma, x)

    def _check_x(self, x: Any, name: str = "x") -> torch.Tensor:
        """Validate images: finite, ``(batch, *input_shape)`` or flat, model's device/dtype,
        and in [0, 1] for a Bernoulli likelihood."""
        t = self.check_input(x, name)[0]
        if t.dim() >= 1 and tuple(t.shape[1:]) == self.input_shape:
            pass
        elif t.dim() == 2 and t.shape[1] == self.n_features:
            t = t.reshape(t.shape[0], *self.input_shape)
        else:
            shapes = {f"(batch, {', '.join(map(str, self.input_shape))})",
                      f"(batch, {self.n_features})"}
            raise ValueError(f"{name} must have shape {' or '.join(sorted(shapes))}, got "
                             f"{tuple(t.shape)}")
        if self.likelihood == "bernoulli" and bool(((t < 0) | (t > 1)).any()):
            raise ValueError(
                f"{name} must lie in [0, 1] for a Bernoulli likelihood, got values in "
                f"[{float(t.min()):.4g}, {float(t.max()):.4g}]"
            )
        return t

    def _check_z(self, z: Any) -> torch.Tensor:
        t = self.check_input(z, "z")[0]
        if t.dim() != 2 or t.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (batch, {self.latent_dim}), got {tuple(t.shape)}")
        return t

    def _close_epoch(self, epoch, sums, beta, clock, X_val, on_epoch_end, nll_k) -> None:
        loss, rec, kl, count = (float(v) for v in dist.all_reduce_(sums.clone(),
                                                                   what="of the epoch sums"))
        entry = {
            "epoch": epoch,
            "loss": loss / count,
            "reconstruction": rec / count,
            "kl": kl / count,
            "beta": beta,
            "steps": self.n_steps_,
            "seconds": clock["before"] + time.perf_counter() - clock["epoch_start"],
        }
        if X_val is not None:
            was_training = self.training
            self.eval()
            gen = torch.Generator(device=self.device).manual_seed(self.seed + 12345)
            entry["val_neg_elbo"] = float(-self.elbo(X_val, generator=gen).mean())
            if nll_k:
                started = time.perf_counter()
                ll = self.log_likelihood(X_val, k=nll_k, chunk=min(nll_k, 500), generator=gen)
                entry["val_nll"] = ll.summary()["nll"]
                entry["val_nll_k"] = nll_k
                entry["val_nll_seconds"] = time.perf_counter() - started  # not in "seconds"
            self.train(was_training)
        if on_epoch_end is not None:
            on_epoch_end(self, entry)
        self.history_.append(entry)
        sums.zero_()
        clock["before"] = 0.0


def _adam(params: Any, lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel where this torch build has one (same update, fewer passes
    over the weights), else the default implementation."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def _check_objective(objective: Any, k: Any) -> tuple[int, str]:
    check_choice(objective, "objective", OBJECTIVES)
    k = check_int(k, "k", low=1)
    if objective == "elbo" and k != 1:
        raise ValueError(f"k={k} samples need objective='iwae'; the ELBO uses one sample")
    return k, objective


def _check_shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError as exc:
        raise TypeError(f"input_shape must be an int or a sequence of ints, got {shape!r}") from exc
    if not 1 <= len(dims) <= 3:
        raise ValueError(f"input_shape must have 1 to 3 dimensions, got {dims}")
    return tuple(check_int(d, "input_shape", low=1) for d in dims)


__all__ = ["VAE", "VAEOutput", "LogLikelihood", "OBJECTIVES", "LR_SCHEDULES"]
