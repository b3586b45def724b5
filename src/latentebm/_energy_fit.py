"""Training a :class:`~latentebm.energy.LatentVariableEBM`: lower the free energy of observed pairs.

Each step on a mini-batch: infer ``z* = argmin_z E(x, y, z)`` (warm-started from the sample's
previous latent), then one Adam step on the predictor's and decoder's parameters for the mean of
``E(x, y, z*)``. By the envelope theorem that is the gradient of ``F(x, y) = min_z E``: the
energy of observed pairs is pushed down. Nothing pushes the energy of other ``y`` up; what keeps
the low-energy set small is ``λR(z)`` (with unit-norm atoms, renormalised after each step, so that
the penalty cannot be bypassed by scaling atoms up and latents down).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from ._validation import check_int, check_scalar
from .checkpoint import check_config_matches, load_checkpoint, save_checkpoint
from .models.lista import _load_optimizer, _optimizer_tensors
from .training.history import MeanRecord
from .training.loop import MinibatchLoop, resuming

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
    config = {**model.describe(), "batch_size": batch_size, "lr": lr, "tol": tol,
              "max_iter": max_iter, "seed": seed, "n_samples": n, "normalize": bool(normalize)}
    optimizer = torch.optim.Adam(params, lr=lr)
    codes = y_t.new_zeros((n, *model.code_shape(tuple(y_t.shape[1:]))))
    start = (0, 0)
    if resuming(resume, checkpoint):
        codes, start = _restore(model, checkpoint, config, optimizer, codes)
    elif normalize and model.n_updates_ == 0:
        model.normalize_()
    loop = MinibatchLoop(
        n, batch_size, epochs, seed=seed, device=y_t.device, start=start, checkpoint=checkpoint,
        save=partial(_save, model, checkpoint, config, optimizer, codes),
        checkpoint_every=checkpoint_every, desc="conditional EBM", progress=progress,
    )
    with loop:
        for epoch in loop.epochs():
            stats = _EpochStats.open(model.history_, epoch.index, resumed=epoch.resumed)
            for b in epoch:
                xb = None if x_t is None else x_t[b.idx]
                values = _step(model, optimizer, xb, y_t[b.idx], codes, b.idx, tol, max_iter,
                               normalize)
                stats.add(values)
                model.energy_trace_.append(float(values["energy"].mean()))
                model.n_updates_ += 1
                loop.step_done(b, model.n_updates_,
                               postfix={"energy": f"{stats.mean('energy'):.4g}",
                                        "nnz": f"{stats.mean('nonzeros'):.1f}"},
                               callback=callback, callback_args=(model.n_updates_, model))
            stats.close()
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


def _save(model, path, config, optimizer, codes, epoch: int, batch: int) -> None:
    """The training state: parameters, Adam's state, the latents, position and history."""
    tensors = {k: v.detach() for k, v in model.state_dict().items()}
    tensors.update(_optimizer_tensors(optimizer))
    tensors["codes"] = codes
    state = {**config, "n_updates": model.n_updates_, "epoch": epoch, "batch": batch,
             "history": model.history_, "energy_trace": model.energy_trace_}
    save_checkpoint(path, tensors, state, kind="latent_variable_ebm")


def _restore(model, path, config, optimizer, codes) -> tuple[torch.Tensor, tuple[int, int]]:
    tensors, saved = load_checkpoint(path, kind="latent_variable_ebm")
    check_config_matches(saved, config, RESUME_KEYS)
    if saved.get("epoch") is None or "codes" not in tensors:
        raise ValueError(f"checkpoint {path} holds a finished model, not a training state")
    if tuple(tensors["codes"].shape) != tuple(codes.shape):
        raise ValueError(f"checkpoint {path} holds latents of another shape")
    model.load_tensors_({k: v for k, v in tensors.items() if not k.startswith("optim.")},
                        saved, str(path))
    _load_optimizer(optimizer, tensors, codes.device)
    return tensors["codes"].to(codes.device, codes.dtype), (saved["epoch"], saved["batch"])


class _EpochStats(MeanRecord):
    """Per-epoch sums of per-sample quantities (in float64), published as running means."""

    KEYS = ("energy", "nonzeros", "iterations")
    SUM_DTYPE = torch.float64


__all__ = ["fit"]
