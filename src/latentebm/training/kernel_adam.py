"""Adam with one second-moment scale per kernel, for convolution kernels learned from
whitened images (:class:`KernelAdam`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class KernelAdam(torch.optim.Optimizer):
    """Adam whose second moment is one number per kernel (the mean of the squared gradient
    over the kernel) for parameters of two or more dimensions, and per entry for vectors.

    Plain Adam divides every kernel entry by its own gradient scale, which turns a smooth,
    band-limited gradient into a sign-like, broadband step: on whitened images (no power above
    about a quarter cycle per pixel) that high-frequency part of every step is never pulled
    back by the data and accumulates as noise in the kernels. With one scale per kernel the
    step is the (averaged) gradient itself, rescaled, so kernels stay in the data's band; the
    step length is Adam's (``lr`` per entry for a steady gradient). The state has Adam's names
    (``step``, ``exp_avg``, ``exp_avg_sq``), and a per-entry ``exp_avg_sq`` from a checkpoint
    written with :class:`torch.optim.Adam` is averaged per kernel when it is loaded.

    Parameters
    ----------
    params : iterable of torch.Tensor
        The parameters; a tensor of shape ``(n_kernels, ...)`` gets ``n_kernels`` scales.
    lr : float, default=1e-3
        Step size.
    betas : tuple of float, default=(0.9, 0.999)
        Decay of the first and second moments.
    eps : float, default=1e-8
        Added to the root of the second moment.
    """

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @staticmethod
    def _reduce(x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=tuple(range(1, x.dim())), keepdim=True) if x.dim() > 1 else x

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter that has a gradient.

        Parameters
        ----------
        closure : callable or None, default=None
            Re-evaluates the loss (as for :class:`torch.optim.Adam`).

        Returns
        -------
        float or None
            The closure's loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(self._reduce(p))
                m, v = state["exp_avg"], state["exp_avg_sq"]
                if v.shape != self._reduce(p).shape:  # Adam's per-entry state
                    v = state["exp_avg_sq"] = self._reduce(v)
                state["step"] += 1
                t = float(state["step"])
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).add_(self._reduce(g * g), alpha=1 - beta2)
                denom = (v / (1 - beta2**t)).sqrt_().add_(group["eps"])
                p.addcdiv_(m, denom, value=-group["lr"] / (1 - beta1**t))
        return loss


__all__ = ["KernelAdam"]
