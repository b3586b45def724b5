"""Pieces of the VAE: encoder/decoder networks and the closed-form densities it needs.

Shapes: inputs ``(batch, *input_shape)``, codes ``(batch, latent_dim)``. Every density below
returns one value per sample, summed over pixels or latent dimensions (never averaged), so
the VAE's loss is in nats per image.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .._docs import fill_doc
from .._validation import check_choice

if TYPE_CHECKING:
    from .vae import VAEConfig

LOG_2PI = math.log(2.0 * math.pi)
ENCODERS = ("mlp", "conv", "linear")
LIKELIHOODS = ("bernoulli", "gaussian")


# --------------------------------------------------------------------------- densities


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(μ, σ²) ‖ N(0, 1))`` per latent dimension: ``½(μ² + σ² − log σ² − 1)``.

    Parameters
    ----------
    mu : torch.Tensor of shape (batch, latent_dim)
        Posterior means.
    logvar : torch.Tensor of shape (batch, latent_dim)
        Posterior log-variances ``log σ²``.

    Returns
    -------
    torch.Tensor of shape (batch, latent_dim)
        The KL of each dimension (sum it over dims).
    """
    return 0.5 * (mu.square() + logvar.exp() - logvar - 1.0)


def log_normal_diag(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``log N(z; μ, diag σ²)`` summed over the last dimension.

    Parameters
    ----------
    z : torch.Tensor of shape (..., latent_dim)
        Points, e.g. ``(k, batch, latent_dim)`` samples.
    mu : torch.Tensor of shape (batch, latent_dim)
        Means, broadcast against ``z``.
    logvar : torch.Tensor of shape (batch, latent_dim)
        Log-variances, broadcast against ``z``.

    Returns
    -------
    torch.Tensor of shape z.shape[:-1]
    """
    return -0.5 * (LOG_2PI + logvar + (z - mu).square() * torch.exp(-logvar)).sum(-1)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` summed over the last dimension.

    Parameters
    ----------
    z : torch.Tensor of shape (..., latent_dim)
        Points.

    Returns
    -------
    torch.Tensor of shape z.shape[:-1]
    """
    return -0.5 * (LOG_2PI + z.square()).sum(-1)


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``log p(x | logits)`` for pixels ``x`` in [0, 1], summed over pixels.

    Written as ``−BCE-with-logits`` (numerically stable for any logit).

    Parameters
    ----------
    logits : torch.Tensor of shape (batch, *shape) or (k, batch, *shape)
        Decoder logits (the second form scores ``x`` under ``k`` samples).
    x : torch.Tensor of shape (batch, *shape)
        Pixels in [0, 1].

    Returns
    -------
    torch.Tensor of shape (batch,) or (k, batch)
    """
    n_event = x.dim() - 1
    nll = F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
    return -nll.flatten(-n_event).sum(-1)


def gaussian_log_likelihood(
    mean: torch.Tensor, log_sigma: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """``log N(x; mean, σ² I)`` summed over all pixels.

    Parameters
    ----------
    mean : torch.Tensor of shape (batch, *shape) or (k, batch, *shape)
        Decoder means.
    log_sigma : torch.Tensor
        ``log σ``, broadcastable to ``mean`` (a scalar for the VAE).
    x : torch.Tensor of shape (batch, *shape)
        Pixels.

    Returns
    -------
    torch.Tensor of shape (batch,) or (k, batch)
    """
    n_event = x.dim() - 1
    log_sigma = log_sigma.expand_as(mean)
    per_pixel = -0.5 * LOG_2PI - log_sigma - 0.5 * ((x - mean) * torch.exp(-log_sigma)).square()
    return per_pixel.flatten(-n_event).sum(-1)


# --------------------------------------------------------------------------- networks


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """``x (batch, *input_shape) -> (μ, log σ²)``, each ``(batch, latent_dim)``.

    ``kind="mlp"``: flatten, ``hidden`` ReLU layers, two linear heads (784-400-20 is
    ``hidden=(400,)``). ``"conv"``: two stride-2 4×4 convolutions (32, 64 channels, ReLU), then
    the MLP on the flattened features. ``"linear"``: the heads applied to the pixels (a linear
    Gaussian encoder). With ``learn_variance=False`` there is no log σ² head: ``log σ²`` is the
    constant ``2 log(fixed_sigma)`` for every input.

    Parameters
    ----------
    config : VAEConfig
        Reads ``input_shape``, ``latent_dim``, ``encoder`` (the kind), ``hidden``,
        ``learn_variance`` and ``fixed_sigma``.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        input_shape, hidden = config.input_shape, config.hidden
        self.input_shape = input_shape
        self.kind = kind = config.encoder
        n_in = math.prod(input_shape)
        if kind == "conv":
            c = conv_shape(input_shape)[0]
            self.features: nn.Module = nn.Sequential(
                nn.Conv2d(c, 32, 4, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(32, 64, 4, stride=2, padding=1),
                nn.ReLU(),
                nn.Flatten(),
            )
            _, h, w = conv_shape(input_shape)
            n_in = 64 * (h // 4) * (w // 4)
        else:
            self.features = nn.Flatten()
        if kind == "linear":
            self.body: nn.Module = nn.Identity()
            n_body = n_in
        else:
            self.body = nn.Sequential(_mlp([n_in, *hidden]), nn.ReLU()) if hidden else nn.Identity()
            n_body = hidden[-1] if hidden else n_in
        self.mu = nn.Linear(n_body, config.latent_dim)
        self.logvar = nn.Linear(n_body, config.latent_dim) if config.learn_variance else None
        self.register_buffer(
            "fixed_logvar", torch.tensor(2.0 * math.log(config.fixed_sigma)), persistent=False
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior parameters of each image.

        Parameters
        ----------
        x : torch.Tensor of shape (batch, *input_shape)
            Images.

        Returns
        -------
        mu : torch.Tensor of shape (batch, latent_dim)
        logvar : torch.Tensor of shape (batch, latent_dim)
            ``log σ²`` (the constant ``2 log(fixed_sigma)`` without a variance head).
        """
        if self.kind == "conv":
            x = x.reshape(x.shape[0], *conv_shape(self.input_shape))
        h = self.body(self.features(x))
        mu = self.mu(h)
        if self.logvar is None:
            return mu, self.fixed_logvar.to(mu.dtype).expand_as(mu)
        return mu, self.logvar(h)


class Decoder(nn.Module):
    """``z (..., latent_dim) -> (..., *input_shape)`` distribution parameters.

    Bernoulli: logits. Gaussian: the mean; the pixel noise ``log σ`` is a learned scalar
    (``obs_sigma=None``, the optimum being the root-mean-square residual) or the fixed
    ``log(obs_sigma)``. Mirrors the encoder: ``"mlp"`` reversed hidden layers, ``"conv"`` a
    linear layer to a 64-channel map then two stride-2 transposed convolutions, ``"linear"`` one
    affine map.

    Parameters
    ----------
    config : VAEConfig
        Reads ``input_shape``, ``latent_dim``, ``encoder`` (the kind), ``hidden`` and
        ``obs_sigma``.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        input_shape, latent_dim, obs_sigma = config.input_shape, config.latent_dim, config.obs_sigma
        self.input_shape = input_shape
        self.kind = kind = config.encoder
        n_out = math.prod(input_shape)
        sizes = [latent_dim] if kind == "linear" else [latent_dim, *reversed(config.hidden)]
        if kind == "conv":
            c, h, w = conv_shape(input_shape)
            self.map_shape = (64, h // 4, w // 4)
            self.net = nn.Sequential(
                _mlp(sizes + [math.prod(self.map_shape)]),
                nn.ReLU(),
                nn.Unflatten(-1, self.map_shape),
                nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
                nn.ReLU(),
                nn.ConvTranspose2d(32, c, 4, stride=2, padding=1),
            )
        else:
            self.net = _mlp(sizes + [n_out])
        if obs_sigma is None:
            self.log_sigma = nn.Parameter(torch.zeros(()))
        else:
            self.register_buffer("log_sigma", torch.tensor(math.log(obs_sigma)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits (Bernoulli) or means (Gaussian) of ``p(x | z)``.

        Parameters
        ----------
        z : torch.Tensor of shape (..., latent_dim)
            Codes, with any leading dimensions (e.g. ``(k, batch, latent_dim)``).

        Returns
        -------
        torch.Tensor of shape (..., *input_shape)
        """
        lead = z.shape[:-1]
        out = self.net(z.reshape(-1, z.shape[-1]))
        return out.reshape(*lead, *self.input_shape)


@fill_doc
def conv_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(C, H, W)`` for a conv encoder: ``(H, W)`` means one channel.

    Parameters
    ----------
    input_shape : tuple of int
        ``(H, W)`` or ``(C, H, W)``.

    {returns_shape}
        ``(C, H, W)``.
    """
    return (1, *input_shape) if len(input_shape) == 2 else input_shape  # type: ignore[return-value]


def check_architecture(input_shape: tuple[int, ...], kind: str) -> None:
    """Raise ``ValueError`` for an unknown kind, or for a conv network on a shape that is not an
    image whose sides are multiples of 4.

    Parameters
    ----------
    input_shape : tuple of int
        Shape of one input.
    kind : str
        One of :data:`ENCODERS`.
    """
    check_choice(kind, "encoder", ENCODERS)
    if kind == "conv":
        if len(input_shape) not in (2, 3):
            raise ValueError(
                f"encoder='conv' needs input_shape (H, W) or (C, H, W), got {input_shape}"
            )
        _, h, w = conv_shape(input_shape)
        if h % 4 or w % 4:
            raise ValueError(
                f"encoder='conv' needs height and width divisible by 4, got input_shape "
                f"{input_shape}"
            )


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One Bernoulli draw per pixel with probability ``x`` (dynamic binarisation).

    Parameters
    ----------
    x : torch.Tensor of any shape
        Probabilities in [0, 1].
    generator : torch.Generator or None, default=None
        Source of randomness, on ``x``'s device.

    Returns
    -------
    torch.Tensor of the shape and dtype of ``x``
        Zeros and ones.
    """
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (u < x).to(x.dtype)


class LogMeanExp:
    """Streaming ``log mean exp`` of log-weights ``(chunk, batch)`` with the delta-method
    standard error of ``log(mean w)`` from the unbiased variance of the ``k`` weights:
    ``SE ≈ sqrt((mean w² / (mean w)² − 1) / (k − 1))``; NaN for one weight, whose spread is
    unknown (it is not 0). The sums run in float64 and the ratio minus one is an ``expm1``:
    in float32 weights within 1e-3 of each other around ``e^−90`` gave a standard error of
    exactly 0. Results come back in the log-weights' dtype."""

    def __init__(self) -> None:
        self.lse: torch.Tensor | None = None
        self.lse2: torch.Tensor | None = None
        self.count = 0
        self.dtype: torch.dtype | None = None

    def add(self, log_w: torch.Tensor) -> None:
        """Add a chunk of log-weights.

        Parameters
        ----------
        log_w : torch.Tensor of shape (chunk, batch)
            Log importance weights of ``chunk`` samples for each image.
        """
        self.dtype = log_w.dtype
        log_w = log_w.double()
        a = torch.logsumexp(log_w, 0)
        b = torch.logsumexp(2.0 * log_w, 0)
        self.lse = a if self.lse is None else torch.logaddexp(self.lse, a)
        self.lse2 = b if self.lse2 is None else torch.logaddexp(self.lse2, b)
        self.count += log_w.shape[0]

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log mean w, its standard error)``, each ``(batch,)``."""
        if self.lse is None or self.lse2 is None:
            raise RuntimeError("no log-weights were added")
        log_k = math.log(self.count)
        log_mean = self.lse - log_k
        if self.count == 1:
            unknown = torch.full_like(log_mean, float("nan"), dtype=self.dtype)
            return log_mean.to(self.dtype), unknown
        rel_var = torch.expm1(self.lse2 - log_k - 2.0 * log_mean)
        se = torch.sqrt(rel_var.clamp_min(0.0) / (self.count - 1))
        return log_mean.to(self.dtype), se.to(self.dtype)


__all__ = [
    "Encoder",
    "Decoder",
    "ENCODERS",
    "LIKELIHOODS",
    "kl_standard_normal",
    "log_normal_diag",
    "log_standard_normal",
    "bernoulli_log_likelihood",
    "gaussian_log_likelihood",
    "binarize",
    "LogMeanExp",
    "check_architecture",
    "conv_shape",
]
