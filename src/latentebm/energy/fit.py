"""Training a :class:`~latentebm.energy.LatentVariableEBM`: lower the free energy of observed pairs.

Each step on a mini-batch: infer ``z* = argmin_z E(x, y, z)`` (warm-started from the sample's
previous latent), then one Adam step on the predictor's and decoder's parameters for the mean of
``E(x, y, z*)``. By the envelope theorem that is the gradient of ``F(x, y) = min_z E``: the
energy of observed pairs is pushed down. Nothing pushes the energy of other ``y`` up; what keeps
the low-energy set small is ``λR(z)`` (with unit-norm atoms, renormalised after each step, so that
the penalty cannot be bypassed by scaling atoms up and latents down).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .._validation import check_bool, check_int, check_scalar, check_seed
from ..training import distributed as dist
from ..training.checkpoint import (
    TrainingState,
    check_same_settings,
    read_checkpoint,
    write_checkpoint,
)
from ..training.fit_options import FitOptions, with_fit_options
from ..training.history import MeanRecord
from ..training.loop import MinibatchLoop

if TYPE_CHECKING:
    from .model import LatentVariableEBM

KIND = "latent_variable_ebm"


@with_fit_options(epochs=10, batch_size=256, checkpoint_every=100,
                  callback_args="n_updates, model")
def fit(
    model: LatentVariableEBM,
    x: Any,
    y: Any,
    *,
    lr: float = 1e-3,
    tol: float = 1e-3,
    max_iter: int = 200,
    seed: int = 0,
    normalize: bool = True,
    options: FitOptions,
) -> list[dict[str, Any]]:
    """Train ``model`` on pairs ``x`` ``(n, ...)`` (``None`` if unconditional), ``y`` ``(n, ...)``.

    Parameters
    ----------
    model : LatentVariableEBM
        The model to train (in place).
    x : array-like, torch.Tensor of shape (n, ...) or None
        Inputs of the predictor (``None`` without one).
    y : array-like or torch.Tensor of shape (n, *signal_dims)
        Observations.
    {fit_batches}
    lr : float, default=1e-3
        Adam step (constant, so a run can be extended).
    tol : float, default=1e-3
        Inference per step: relative gap, or relative change for a general decoder.
    max_iter : int, default=200
        Iteration cap of the inference per step.
    seed : int, default=0
        Seed of the epoch order.
    normalize : bool, default=True
        Unit-norm atoms after every step (linear-in-z decoders).
    {fit_options}

    Returns
    -------
    list of dict
        The per-epoch history (mean energy at ``z*``, mean non-zeros of ``z*``, mean
        inference iterations, seconds); the per-step mean energy goes to
        ``model.energy_trace_``.

    Notes
    -----
    A NaN/inf energy or weight stops training with ``FloatingPointError`` naming the step; the
    last good checkpoint is kept, and ``resume=True`` continues from a checkpoint exactly.

    Under ``torchrun`` ``batch_size`` is the global batch: each process infers the latents of
    its share of it (warm starts gathered onto every rank), the model trains as
    ``DistributedDataParallel`` on its share of the global mean energy, and the weights, the
    history and ``energy_trace_`` are those one process gets on the same batches. Rank 0 alone
    writes the checkpoint; every rank resumes from it.
    """
    x_t, y_t, _ = model._inputs(x, y)
    n = y_t.shape[0]
    options = options.checked(n)
    checkpoint = options.checkpoint
    lr = check_scalar(lr, "lr", low=0.0, low_inclusive=False)
    tol = check_scalar(tol, "tol", low=0.0)
    max_iter = check_int(max_iter, "max_iter", low=1)
    seed = check_seed(seed)
    normalize = check_bool(normalize, "normalize")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    fit_args = {"batch_size": options.batch_size, "lr": lr, "tol": tol, "max_iter": max_iter,
                "seed": seed, "n_samples": n, "normalize": normalize}
    optimizer = torch.optim.Adam(params, lr=lr)
    codes = y_t.new_zeros((n, *model.code_shape(tuple(y_t.shape[1:]))))
    start = (0, 0)
    if options.resuming:
        codes, start = _restore(model, checkpoint, fit_args, optimizer, codes)
    elif normalize and model.n_updates_ == 0:
        model.normalize_()

    @dist.on_main
    def save(epoch: int, batch: int) -> None:
        state = TrainingState((epoch, batch), fit_args, optimizer.state_dict(),
                              extra={"codes": codes})
        write_checkpoint(checkpoint, kind=KIND, config=model.describe(),
                         state_dict=model.state_dict(), training=state)

    loop = MinibatchLoop(
        n, options.batch_size, options.epochs, seed=seed, device=y_t.device, start=start,
        checkpoint=checkpoint, save=save, checkpoint_every=options.checkpoint_every,
        watch=model, optimizer=optimizer, callback=options.callback, desc="conditional EBM",
        progress=options.progress and dist.is_main(),
    )
    # a predictor or decoder may leave some parameters out of a step (e.g. an unused bias)
    trainer = dist.data_parallel(model, find_unused_parameters=True)
    with loop:
        for epoch in loop.epochs():
            stats = _EpochStats.open(model.history_, epoch.index, resumed=epoch.resumed)
            for b in epoch:
                mine = dist.shard(b.idx)
                xb = None if x_t is None else x_t[mine]
                values = _step(model, trainer, optimizer, xb, y_t[mine], codes, b.idx, tol,
                               max_iter, normalize)
                batch_sums = stats.add(values)
                model.energy_trace_.append(batch_sums["energy"] / b.idx.numel())
                model.n_updates_ += 1
                loop.step_done(b, model.n_updates_, loss=values["energy"],
                               postfix={"energy": f"{stats.mean('energy'):.4g}",
                                        "nnz": f"{stats.mean('nonzeros'):.1f}"})
            stats.close()
    return model.history_


def _step(model, trainer, optimizer, xb, yb, codes, idx, tol, max_iter, normalize) -> dict:
    """Infer ``z*`` (no gradient) of this process's rows ``xb``, ``yb`` of the global batch
    ``idx``, then one Adam step on the global batch's ``mean E(x, y, z*)`` through
    ``trainer`` (``model`` or its DDP wrapper). Returns this process's per-sample values."""
    mine = dist.shard(idx)
    with torch.no_grad():
        h = model.hidden(xb)
        out = model.solve_tensors(h, yb, codes[mine], tol=tol, max_iter=max_iter)
    Z = out.z
    codes[idx] = dist.all_gather_cat(Z, what="of the latents")
    optimizer.zero_grad(set_to_none=True)
    dist.global_mean(trainer(xb, yb, Z).sum(), idx.numel()).backward()
    optimizer.step()
    if normalize:
        model.normalize_()
    return {"energy": out.energy, "nonzeros": (Z != 0).flatten(1).sum(1),
            "iterations": out.n_iter_per_sample}


def _restore(model, path, fit_args, optimizer, codes) -> tuple[torch.Tensor, tuple[int, int]]:
    ckpt = read_checkpoint(path, kind=KIND)
    if ckpt.training is None:
        raise ValueError(f"checkpoint {path} holds a finished model, not a training state")
    check_same_settings(path, ckpt.training.fit, fit_args)
    saved_codes = ckpt.training.extra.get("codes")
    if saved_codes is None or tuple(saved_codes.shape) != tuple(codes.shape):
        raise ValueError(f"checkpoint {path} holds latents of another shape")
    model.load_checkpoint_(ckpt)
    optimizer.load_state_dict(ckpt.training.optimizer)
    return saved_codes.to(codes.device, codes.dtype), ckpt.training.position


class _EpochStats(MeanRecord):
    """Per-epoch sums of per-sample quantities (in float64), published as running means."""

    KEYS = ("energy", "nonzeros", "iterations")
    SUM_DTYPE = torch.float64


__all__ = ["fit"]
