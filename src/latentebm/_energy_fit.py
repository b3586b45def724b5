"""Training a :class:`~latentebm.energy.LatentVariableEBM`: lower the free energy of observed pairs.

Each step on a mini-batch: infer ``z* = argmin_z E(x, y, z)`` (warm-started from the sample's
previous latent), then one Adam step on the predictor's and decoder's parameters for the mean of
``E(x, y, z*)``. By the envelope theorem that is the gradient of ``F(x, y) = min_z E``: the
energy of observed pairs is pushed down. Nothing pushes the energy of other ``y`` up; what keeps
the low-energy set small is ``λR(z)`` (with unit-norm atoms, renormalised after each step, so that
the penalty cannot be bypassed by scaling atoms up and latents down).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from ._validation import check_int, check_scalar
from .checkpoint import check_config_matches, load_checkpoint, save_checkpoint
from .models._interrupt import GracefulInterrupt
from .models.lista import _load_optimizer, _optimizer_tensors

RESUME_KEYS = ["lam", "regularizer", "cost", "predictor", "decoder", "batch_size", "lr", "tol",
               "max_iter", "seed", "n_samples", "normalize"]


def fit(
    model,
    x: Any,
    y: Any,
    *,
    epochs: int = 10,
    batch_size: int = 256,
    lr: float = 1e-3,
    tol: float = 1e-3,
    max_iter: int = 200,
    seed: int = 0,
    normalize: bool = True,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    resume: bool = False,
    callback: Callable[[int, Any], None] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train ``model`` on pairs ``x`` ``(n, ...)`` (``None`` if unconditional), ``y`` ``(n, ...)``.

    tol, max_iter: inference per step (relative gap, or relative change for a general decoder).
    lr: Adam step (constant, so a run can be extended). normalize: unit-norm atoms after every
    step (linear-in-z decoders). checkpoint: a ``.safetensors`` path written every
    ``checkpoint_every`` steps, at the end, and on Ctrl-C (after the step in flight);
    ``resume=True`` continues from it exactly. Returns the per-epoch history (mean energy at
    ``z*``, mean non-zeros of ``z*``, mean inference iterations, seconds); the per-step mean
    energy goes to ``model.energy_trace_``.
    """
    x_t, y_t, _ = model._inputs(x, y)
    epochs = check_int(epochs, "epochs", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    lr = check_scalar(lr, "lr", low=0.0, low_inclusive=False)
    tol = check_scalar(tol, "tol", low=0.0)
    max_iter = check_int(max_iter, "max_iter", low=1)
    seed = check_int(seed, "seed", low=0)
    checkpoint_every = check_int(checkpoint_every, "checkpoint_every", low=1)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    n = y_t.shape[0]
    batch_size = min(batch_size, n)
    steps_per_epoch = math.ceil(n / batch_size)
    config = {**model.describe(), "batch_size": batch_size, "lr": lr, "tol": tol,
              "max_iter": max_iter, "seed": seed, "n_samples": n, "normalize": bool(normalize)}
    optimizer = torch.optim.Adam(params, lr=lr)
    codes = y_t.new_zeros((n, *model.code_shape(tuple(y_t.shape[1:]))))
    start_epoch, start_batch = 0, 0
    if resume and checkpoint is not None and os.path.exists(checkpoint):
        codes, start_epoch, start_batch = _restore(model, checkpoint, config, optimizer, codes)
    elif normalize and model.n_updates_ == 0:
        model.normalize_()
    position = (start_epoch, start_batch)

    def save() -> None:
        if checkpoint is not None:
            tensors = {k: v.detach() for k, v in model.state_dict().items()}
            tensors.update(_optimizer_tensors(optimizer))
            tensors["codes"] = codes
            state = {**config, "n_updates": model.n_updates_, "epoch": position[0],
                     "batch": position[1], "history": model.history_,
                     "energy_trace": model.energy_trace_}
            save_checkpoint(checkpoint, tensors, state, kind="latent_variable_ebm")

    bar = tqdm(total=epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch + start_batch,
               disable=not progress, desc="conditional EBM", unit="batch", leave=False)
    with GracefulInterrupt() as interrupt:
        try:
            for epoch in range(start_epoch, epochs):
                gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
                order = torch.randperm(n, generator=gen).to(y_t.device)
                first = start_batch if epoch == start_epoch else 0
                stats = _EpochStats.open(model.history_, epoch, resumed=first > 0)
                for batch in range(first, steps_per_epoch):
                    idx = order[batch * batch_size : (batch + 1) * batch_size]
                    xb = None if x_t is None else x_t[idx]
                    values = _step(model, optimizer, xb, y_t[idx], codes, idx, tol, max_iter,
                                   normalize)
                    stats.add(values)
                    model.energy_trace_.append(float(values["energy"].mean()))
                    model.n_updates_ += 1
                    position = (epoch, batch + 1) if batch + 1 < steps_per_epoch else (epoch + 1, 0)
                    bar.update(1)
                    bar.set_postfix(energy=f"{stats.mean('energy'):.4g}",
                                    nnz=f"{stats.mean('nonzeros'):.1f}")
                    if callback is not None:
                        callback(model.n_updates_, model)
                    if model.n_updates_ % checkpoint_every == 0:
                        save()
                    interrupt.raise_if_requested()
                stats.close()
        except KeyboardInterrupt:
            save()
            bar.close()
            raise
    bar.close()
    save()
    return model.history_


def _step(model, optimizer, xb, yb, codes, idx, tol, max_iter, normalize) -> dict:
    h = model.hidden(xb)
    with torch.no_grad():
        hd = None if h is None else h.detach()
        out = model.solve_tensors(hd, yb, codes[idx], tol=tol, max_iter=max_iter)
    Z = out["z"]
    codes[idx] = Z
    optimizer.zero_grad(set_to_none=True)
    model.energy_tensors(h, yb, Z).mean().backward()
    optimizer.step()
    if normalize:
        model.normalize_()
    return {"energy": out["energy"], "nonzeros": (Z != 0).flatten(1).sum(1),
            "iterations": out["n_iter"]}


def _restore(model, path, config, optimizer, codes) -> tuple[torch.Tensor, int, int]:
    tensors, saved = load_checkpoint(path, kind="latent_variable_ebm")
    check_config_matches(saved, config, RESUME_KEYS)
    if saved.get("epoch") is None or "codes" not in tensors:
        raise ValueError(f"checkpoint {path} holds a finished model, not a training state")
    if tuple(tensors["codes"].shape) != tuple(codes.shape):
        raise ValueError(f"checkpoint {path} holds latents of another shape")
    model.load_tensors_({k: v for k, v in tensors.items() if not k.startswith("optim.")},
                        saved, str(path))
    _load_optimizer(optimizer, tensors, codes.device)
    return tensors["codes"].to(codes.device, codes.dtype), saved["epoch"], saved["batch"]


class _EpochStats:
    """Per-epoch sums of per-sample quantities, published to the history as running means."""

    KEYS = ("energy", "nonzeros", "iterations")

    def __init__(self, history: list, epoch: int) -> None:
        self.history, self.epoch = history, epoch
        self.sums = dict.fromkeys(self.KEYS, 0.0)
        self.count = 0
        self.seconds = 0.0
        self.start = time.perf_counter()

    @classmethod
    def open(cls, history: list, epoch: int, *, resumed: bool) -> _EpochStats:
        stats = cls(history, epoch)
        last = history[-1] if history and history[-1].get("epoch") == epoch else None
        if resumed and last is not None and last.get("partial"):
            history.pop()
            stats.count = int(last["samples"])
            stats.sums = {k: last[k] * stats.count for k in cls.KEYS}
            stats.seconds = last["seconds"]
        return stats

    def mean(self, key: str) -> float:
        return self.sums[key] / max(self.count, 1)

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for key in self.KEYS:
            self.sums[key] += float(values[key].double().sum())
        self.count += int(values["energy"].shape[0])
        self._publish(partial=True)

    def close(self) -> None:
        self._publish(partial=False)

    def _publish(self, partial: bool) -> None:
        if self.history and self.history[-1].get("epoch") == self.epoch:
            self.history.pop()
        self.history.append({
            "epoch": self.epoch, **{k: self.mean(k) for k in self.KEYS},
            "samples": self.count, "partial": partial,
            "seconds": self.seconds + time.perf_counter() - self.start,
        })


__all__ = ["fit"]
