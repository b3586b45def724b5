"""LISTA: K unrolled ISTA steps with learned weights that regress the optimal sparse codes.

Gregor & LeCun (2010): ``z_1 = shrink_θ(W_e y)``, ``z_{k+1} = shrink_θ(W_e y + S z_k)``,
initialised from ISTA on the dictionary ``W`` ``(n_features, n_atoms)`` with ``W_e = Wᵀ/L``
``(n_atoms, n_features)``, ``S = I − WᵀW/L`` and ``θ = λ/L``, so that the untrained network
returns exactly K ISTA steps from zero. Trained by backpropagation through the K steps on
``‖z̄ − z*‖²``, with ``z*`` the optimal codes found by FISTA.

Variants (``variant``):

- ``"lista"``: the form above, with a scalar gain per step on the shared input term,
  ``z_{k+1} = shrink_{θ_k}(α_k W_e y + S_k z_k)`` (``α = 1`` initially; it lets :meth:`LISTA.grow`
  add steps that start as the identity). Untied means one ``S_k``, ``α_k`` and threshold vector
  ``θ_k`` per step; ``W_e`` is shared because ``W_e y`` is computed once per signal.
- ``"cp"``: LISTA-CP, the coupled form of Chen, Liu, Wang & Yin (2018),
  ``z_{k+1} = shrink_{θ_k}(z_k + V_kᵀ(y − W z_k))`` with ``V_k`` ``(n_features, n_atoms)``
  initialised to ``W/L`` (untied: one ``V_k`` per step).
- ``"step"``: ALISTA-like (Liu, Chen, Wang & Yin 2019), only per-step scalar step sizes ``γ_k``
  and thresholds ``θ_k`` are learned: ``z_{k+1} = shrink_{θ_k}(z_k − γ_k Wᵀ(W z_k − y))``.

Support selection (``support=p``, any variant; "LISTA-CPSS" of Chen et al. 2018 for ``"cp"``): at
step ``k`` (1-based) the ``min(k·p, p_max)·n_atoms`` entries of largest magnitude of each sample
that the threshold keeps bypass the shrinkage (they are not pulled towards zero), which removes
the soft threshold's bias on the (by then well identified) support. ``support=0`` (default) is
plain LISTA, so the untrained network still equals ISTA.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from .._validation import as_tensor, check_int, check_lam, check_scalar
from ..checkpoint import check_config_matches, load_checkpoint, save_checkpoint
from ..operators import DenseDictionary
from ..problem import to_output
from ..regularizers import get_regularizer
from ..solvers import proximal_gradient
from ..training.history import EpochRecord
from ..training.loop import MinibatchLoop, resuming

VARIANTS = ("lista", "cp", "step")
KIND = "lista"
RESUME_KEYS = [
    "n_features", "n_atoms", "lam", "n_steps", "variant", "tied", "nonneg", "seed",
    "epochs", "batch_size", "lr", "n_samples", "max_grad_norm", "support", "support_max",
    "project_input",
]
#: what a checkpoint written before a setting existed was trained with
OLD_DEFAULTS = {"support": 0.0, "support_max": 0.0, "project_input": False}
FINAL_LR_FRACTION = 0.01
#: without ``support_max``, the selected fraction stops growing after this many steps
SUPPORT_MAX_STEPS = 5


class LISTA(nn.Module):
    """Learned ISTA encoder for the energy ``½‖y − Wz‖² + λ‖z‖₁`` (``nonneg``: ``z ≥ 0``).

    W: dictionary ``(n_features, n_atoms)`` (array or tensor; the module takes its device and
    dtype). lam: λ. n_steps: K ≥ 1. lipschitz: ``L ≥ λ_max(WᵀW)``, by default the library's
    power-iteration estimate. ``model(Y)`` maps signals ``(batch, n_features)`` to codes
    ``(batch, n_atoms)`` with gradients; :meth:`encode` is the NumPy-friendly, no-grad version.
    """

    def __init__(
        self,
        W: Any,
        lam: float,
        n_steps: int = 3,
        *,
        variant: str = "lista",
        tied: bool = False,
        nonneg: bool = False,
        lipschitz: float | None = None,
        seed: int = 0,
        support: float = 0.0,
        support_max: float | None = None,
    ) -> None:
        super().__init__()
        W_t = as_tensor(W, "W", ndim=2).detach().clone()
        self.lam = check_lam(lam)
        self.n_steps = check_int(n_steps, "n_steps", low=1)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if not isinstance(tied, bool):
            raise TypeError(f"tied must be a bool, got {type(tied).__name__}")
        self.variant, self.tied, self.nonneg = variant, tied, bool(nonneg)
        self.seed = check_int(seed, "seed", low=0)
        self.support = check_scalar(support, "support", low=0.0, high=1.0)
        if support_max is None:
            support_max = min(1.0, SUPPORT_MAX_STEPS * self.support)
        self.support_max = check_scalar(support_max, "support_max", low=0.0, high=1.0)
        self.n_features, self.n_atoms = W_t.shape
        if lipschitz is None:
            L = DenseDictionary(W_t).lipschitz((self.n_features,)).detach().clone()
        else:
            L = torch.tensor(
                check_scalar(lipschitz, "lipschitz", low=0.0, low_inclusive=False),
                dtype=W_t.dtype, device=W_t.device,
            )
        self.register_buffer("W", W_t)
        self.register_buffer("L", L)
        self._reg = get_regularizer(self.nonneg)
        self._init_parameters()
        self.n_updates_ = 0
        self.history_: list[dict[str, float]] = []
        self._target_cache: tuple[tuple, torch.Tensor] | None = None

    # ----------------------------------------------------------------- parameters
    def _count(self, per_step: int) -> int:
        """How many copies of a per-step tensor: 1 when tied, else ``per_step`` (at least 1, so
        a 1-step network keeps one unused ``S`` and every depth has the same tensor names)."""
        return 1 if self.tied else max(per_step, 1)

    def _init_parameters(self) -> None:
        W, L, K = self.W, self.L, self.n_steps
        inv_L = 1.0 / L
        if self.variant == "lista":
            gram = W.T @ W
            eye = torch.eye(self.n_atoms, dtype=W.dtype, device=W.device)
            self.W_e = nn.Parameter(W.T * inv_L)
            self.alpha = nn.Parameter(torch.ones(self._count(K), dtype=W.dtype, device=W.device))
            S = eye - gram * inv_L
            self.S = nn.Parameter(S.expand(self._count(K - 1), -1, -1).clone())
            self.theta = nn.Parameter((self.lam * inv_L).expand(self._count(K), self.n_atoms)
                                      .clone())
        elif self.variant == "cp":
            self.V = nn.Parameter((W * inv_L).expand(self._count(K), -1, -1).clone())
            self.theta = nn.Parameter((self.lam * inv_L).expand(self._count(K), self.n_atoms)
                                      .clone())
        else:
            self.gamma = nn.Parameter(inv_L.expand(self._count(K)).clone())
            self.theta = nn.Parameter((self.lam * inv_L).expand(self._count(K), 1).clone())
            self.register_buffer("G", W.T @ W)

    def _at(self, p: torch.Tensor, k: int) -> torch.Tensor:
        return p[0] if self.tied else p[k]

    def grow(self, n_steps: int) -> LISTA:
        """A deeper copy that computes exactly what this network computes: its first K steps
        carry this network's (trained) weights and every added step starts as the identity
        (``α = 0, S = I`` for classic LISTA, ``V = 0`` for CP, ``γ = 0`` for step-only, and
        ``θ = 0``), so training the deeper network starts from the shallower one's error.
        A tied network is copied with more steps. Deep unrolled networks train better grown
        this way than from the ISTA initialisation alone.
        """
        n_steps = check_int(n_steps, "n_steps", low=self.n_steps)
        deeper = LISTA(self.W, self.lam, n_steps, variant=self.variant, tied=self.tied,
                       nonneg=self.nonneg, lipschitz=float(self.L), seed=self.seed,
                       support=self.support, support_max=self.support_max)
        with torch.no_grad():
            for name, p in deeper.named_parameters():
                mine = getattr(self, name)
                if name == "W_e" or self.tied:
                    p.copy_(mine)
                    continue
                # S has one matrix per step after the first; a 1-step network keeps an unused one.
                have = mine.shape[0] if name != "S" else self.n_steps - 1
                p[:have] = mine[:have]
                if name == "S":
                    p[have:] = torch.eye(self.n_atoms, dtype=p.dtype, device=p.device)
                else:
                    p[have:] = 0
        return deeper

    # ----------------------------------------------------------------- inference
    def forward(self, Y: torch.Tensor) -> torch.Tensor:
        """Codes ``(batch, n_atoms)`` of signals ``Y`` ``(batch, n_features)`` (differentiable)."""
        return self.unroll(self._check_signals(Y, tensor_only=True))[-1]

    def unroll(self, Y: torch.Tensor) -> list[torch.Tensor]:
        """All K iterates ``[z_1, ..., z_K]`` for an already validated ``Y``."""
        prox = self._shrink
        zs: list[torch.Tensor] = []
        if self.variant == "lista":
            B = Y @ self.W_e.T
            z = prox(self._at(self.alpha, 0) * B, self._at(self.theta, 0), 0)
            zs.append(z)
            for k in range(1, self.n_steps):
                S = self.S[0] if self.tied else self.S[k - 1]
                z = prox(self._at(self.alpha, k) * B + z @ S.T, self._at(self.theta, k), k)
                zs.append(z)
        elif self.variant == "cp":
            # z + Vᵀ(y − Wz) = z + Vᵀy − (VᵀW) z; VᵀW is formed once per forward pass.
            B = Y @ self.V[0]
            z = prox(B, self._at(self.theta, 0), 0)
            zs.append(z)
            M = self.V[0].T @ self.W if self.tied and self.n_steps > 1 else None
            for k in range(1, self.n_steps):
                if not self.tied:
                    B = Y @ self.V[k]
                    M = self.V[k].T @ self.W
                z = prox(z + B - z @ M.T, self._at(self.theta, k), k)
                zs.append(z)
        else:
            b = Y @ self.W
            z = prox(self._at(self.gamma, 0) * b, self._at(self.theta, 0), 0)
            zs.append(z)
            for k in range(1, self.n_steps):
                z = prox(z - self._at(self.gamma, k) * (z @ self.G - b), self._at(self.theta, k),
                         k)
                zs.append(z)
        return zs

    def _selected(self, k: int) -> int:
        """How many entries per sample bypass the threshold at step ``k`` (0-based)."""
        frac = min((k + 1) * self.support, self.support_max)
        return min(int(round(frac * self.n_atoms)), self.n_atoms)

    def _shrink(self, v: torch.Tensor, theta: torch.Tensor, k: int) -> torch.Tensor:
        """The regulariser's prox; with support selection, the largest entries that survive the
        threshold keep their value (the selection itself carries no gradient)."""
        z = self._reg.prox(v, theta)
        n = self._selected(k) if self.support > 0 else 0
        if n == 0:
            return z
        with torch.no_grad():
            a = v.abs()
            cut = a.topk(n, dim=1).values[:, -1:]
            keep = (a >= cut) & (z != 0)
        return torch.where(keep, v, z)

    def encode(self, Y: Any) -> Any:
        """Codes without gradient; NumPy in, NumPy out (tensors stay tensors)."""
        numpy_out = not isinstance(Y, torch.Tensor)
        with torch.no_grad():
            Z = self.unroll(self._check_signals(Y))[-1]
        return to_output(Z, numpy_out)

    def dictionary(self) -> torch.Tensor:
        """The dictionary ``W`` ``(n_features, n_atoms)`` the network was built from."""
        return self.W

    def targets(self, Y: Any, *, tol: float | None = None, max_iter: int = 5000) -> torch.Tensor:
        """Optimal codes ``z*`` of ``Y`` by the library's FISTA (restart and support polish) to a
        relative duality gap ``tol`` (default 1e-5 in float32, 1e-10 in float64)."""
        Y_t = self._check_signals(Y)
        if tol is None:
            tol = 1e-10 if Y_t.dtype == torch.float64 else 1e-5
        tol = check_scalar(tol, "tol", low=0.0)
        max_iter = check_int(max_iter, "max_iter", low=1)
        with torch.no_grad():
            out = proximal_gradient(
                DenseDictionary(self.W), Y_t, self.lam, self._reg, tol=tol, max_iter=max_iter
            )
        return out.z

    # ----------------------------------------------------------------- training
    def fit(
        self,
        Y: Any,
        *,
        epochs: int = 50,
        batch_size: int = 256,
        lr: float = 1e-3,
        targets: Any = None,
        tol: float | None = None,
        max_iter: int = 5000,
        max_grad_norm: float | None = 1.0,
        project_input: bool = True,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 200,
        resume: bool = False,
        callback: Callable[[int, LISTA], None] | None = None,
        progress: bool = True,
    ) -> list[dict[str, float]]:
        """Regress the optimal codes of ``Y`` ``(n_samples, n_features)`` through the K steps.

        targets: the optimal codes ``(n_samples, n_atoms)`` if already known; otherwise computed
        once by :meth:`targets` (to ``tol``) and cached for later calls on the same tensor.
        Adam with step ``lr``, cosine-decayed to ``lr/100`` over ``epochs``; loss
        ``Σ‖z̄ − z*‖² / Σ‖z*‖²`` per mini-batch, gradients clipped to norm ``max_grad_norm``
        (``None``: no clipping; deep unrolled networks can otherwise diverge); deterministic
        epoch order from ``seed``.
        ``project_input``: after every update, project the input weights (``W_e`` of ``"lista"``,
        the ``V_k`` of ``"cp"``) onto the range of ``W``: the lasso's solution depends on ``y``
        only through ``Wᵀy``, so the ``n_features − rank(W)`` other input directions can only
        fit the training set's noise (held-out MNIST, 256 atoms: 2–10 % lower code error).
        ``checkpoint``: a ``.safetensors`` path written every ``checkpoint_every`` updates, at the
        end and on Ctrl-C; ``resume=True`` continues from it (same configuration required).
        Returns the per-epoch history: relative code error, learning rate, seconds.
        """
        Y_t = self._check_signals(Y)
        epochs = check_int(epochs, "epochs", low=1)
        batch_size = check_int(batch_size, "batch_size", low=1)
        lr = check_scalar(lr, "lr", low=0.0, low_inclusive=False)
        checkpoint_every = check_int(checkpoint_every, "checkpoint_every", low=1)
        if max_grad_norm is not None:
            max_grad_norm = check_scalar(max_grad_norm, "max_grad_norm", low=0.0,
                                         low_inclusive=False)
        n = Y_t.shape[0]
        batch_size = min(batch_size, n)
        if not isinstance(project_input, bool):
            raise TypeError(f"project_input must be a bool, got {type(project_input).__name__}")
        config = self._config(epochs=epochs, batch_size=batch_size, lr=lr, n_samples=n,
                              max_grad_norm=max_grad_norm, project_input=project_input)
        basis = self._range_basis() if project_input else None
        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        own_targets = targets is None
        start = (0, 0)
        Z_star = None
        if resuming(resume, checkpoint):
            start, Z_star = self._restore(checkpoint, config, optimizer)
        if Z_star is None:
            Z_star = self._training_targets(Y_t, targets, tol, max_iter)
        loop = MinibatchLoop(
            n, batch_size, epochs, seed=self.seed, device=Y_t.device, start=start,
            checkpoint=checkpoint,
            save=partial(self._save, checkpoint, config, optimizer,
                         Z_star=Z_star if own_targets else None),
            checkpoint_every=checkpoint_every, desc=f"LISTA-{self.n_steps} {self.variant}",
            progress=progress,
        )
        with loop:
            for epoch in loop.epochs():
                stats = _EpochStats.open(self.history_, epoch.index, resumed=epoch.resumed)
                for b in epoch:
                    for group in optimizer.param_groups:
                        group["lr"] = _cosine(lr, b.step, loop.total)
                    err, ref = self._update(optimizer, Y_t[b.idx], Z_star[b.idx], max_grad_norm,
                                            basis)
                    stats.add(err, ref, optimizer.param_groups[0]["lr"])
                    self.n_updates_ += 1
                    loop.step_done(b, self.n_updates_,
                                   postfix={"code_error": f"{stats.code_error:.3g}"},
                                   callback=callback, callback_args=(self.n_updates_, self))
                stats.close()
        return self.history_

    def _range_basis(self) -> torch.Tensor | None:
        """An orthonormal basis ``(n_features, rank)`` of the range of ``W`` (``None`` when the
        variant has no input weights to project or ``W`` has full row rank)."""
        if self.variant == "step":
            return None
        U, sv, _ = torch.linalg.svd(self.W, full_matrices=False)
        rank = int((sv > sv.max() * max(self.W.shape) * torch.finfo(sv.dtype).eps).sum())
        return None if rank == self.n_features else U[:, :rank].contiguous()

    def _project_input(self, Q: torch.Tensor) -> None:
        with torch.no_grad():
            if self.variant == "lista":
                self.W_e.copy_((self.W_e @ Q) @ Q.T)
            elif self.variant == "cp":
                self.V.copy_(Q @ (Q.T @ self.V))

    def _update(self, optimizer, Yb: torch.Tensor, Zb: torch.Tensor, max_grad_norm, basis=None):
        optimizer.zero_grad(set_to_none=True)
        Z = self.unroll(Yb)[-1]
        err = (Z - Zb).pow(2).sum()
        ref = Zb.pow(2).sum()
        (err / ref.clamp_min(torch.finfo(ref.dtype).tiny)).backward()
        if max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.parameters(), max_grad_norm)
        optimizer.step()
        if basis is not None:
            self._project_input(basis)
        return err.detach(), ref

    def _training_targets(self, Y, targets, tol, max_iter) -> torch.Tensor:
        if targets is not None:
            Z = as_tensor(targets, "targets", ndim=2).to(self.W.device, self.W.dtype)
            if tuple(Z.shape) != (Y.shape[0], self.n_atoms):
                raise ValueError(
                    f"targets must have shape ({Y.shape[0]}, {self.n_atoms}), got {tuple(Z.shape)}"
                )
            return Z
        key = (Y.data_ptr(), tuple(Y.shape), Y.dtype, str(Y.device), Y._version)
        if self._target_cache is None or self._target_cache[0] != key:
            self._target_cache = (key, self.targets(Y, tol=tol, max_iter=max_iter))
        return self._target_cache[1]

    # ----------------------------------------------------------------- checkpoints
    def save(self, path: str | os.PathLike) -> None:
        """Save the network (dictionary, learned weights, configuration) to safetensors."""
        self._save(path, self._config(), None, None, None)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device | None = None) -> LISTA:
        """Rebuild a network saved by :meth:`save` or by :meth:`fit`'s checkpoint."""
        tensors, config = load_checkpoint(path, kind=KIND)
        W = tensors["W"] if device is None else tensors["W"].to(device)
        model = cls(
            W, config["lam"], config["n_steps"], variant=config["variant"],
            tied=config["tied"], nonneg=config["nonneg"], lipschitz=float(tensors["L"]),
            seed=config["seed"], support=config.get("support", 0.0),
            support_max=config.get("support_max", 0.0),
        )
        model._load_state(tensors, config)
        return model

    def _config(self, **extra: Any) -> dict[str, Any]:
        return {
            "n_features": self.n_features, "n_atoms": self.n_atoms, "lam": self.lam,
            "n_steps": self.n_steps, "variant": self.variant, "tied": self.tied,
            "nonneg": self.nonneg, "seed": self.seed, "support": self.support,
            "support_max": self.support_max, **extra,
        }

    def _save(self, path, config, optimizer, epoch, batch, *, Z_star=None) -> None:
        tensors = {name: t.detach() for name, t in self.state_dict().items()}
        if optimizer is not None:
            tensors.update(_optimizer_tensors(optimizer))
        if Z_star is not None:
            tensors["targets"] = Z_star
        state = {**config, "n_updates": self.n_updates_, "epoch": epoch, "batch": batch,
                 "history": self.history_}
        save_checkpoint(path, tensors, state, kind=KIND)

    def _restore(self, path, config, optimizer) -> tuple[tuple[int, int], torch.Tensor | None]:
        """Load a training state; returns its ``(epoch, batch)`` and the saved targets, if any."""
        tensors, saved = load_checkpoint(path, kind=KIND)
        check_config_matches({**OLD_DEFAULTS, **saved}, config, RESUME_KEYS)
        if saved.get("epoch") is None:
            raise ValueError(f"checkpoint {path} holds a finished model, not a training state")
        self._load_state(tensors, saved)
        _load_optimizer(optimizer, tensors, self.W.device)
        Z = tensors.get("targets")
        if Z is not None:
            Z = Z.to(self.W.device, self.W.dtype)
        return (saved["epoch"], saved["batch"]), Z

    def _load_state(self, tensors, config) -> None:
        own = self.state_dict()
        missing = [name for name in own if name not in tensors]
        if missing:
            raise ValueError(f"checkpoint lacks {missing}; it is from another configuration")
        for name, target in own.items():
            if tuple(tensors[name].shape) != tuple(target.shape):
                raise ValueError(
                    f"checkpoint tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                    f"expected {tuple(target.shape)}: another configuration"
                )
            target.copy_(tensors[name].to(target.device, target.dtype))
        self.n_updates_ = int(config.get("n_updates", 0))
        self.history_ = list(config.get("history", []))

    # ----------------------------------------------------------------- helpers
    def _check_signals(self, Y: Any, *, tensor_only: bool = False) -> torch.Tensor:
        if isinstance(Y, torch.Tensor):
            Y_t = as_tensor(Y, "Y", ndim=2)
            if Y_t.device != self.W.device:
                raise ValueError(f"Y is on {Y_t.device} but the model is on {self.W.device}")
            if Y_t.dtype != self.W.dtype:
                raise TypeError(f"Y has dtype {Y_t.dtype} but the model has {self.W.dtype}")
        elif tensor_only:
            raise TypeError(f"Y must be a torch tensor, got {type(Y).__name__}; use encode()")
        else:
            Y_t = as_tensor(Y, "Y", ndim=2).to(self.W.device, self.W.dtype)
        if Y_t.shape[1] != self.n_features:
            raise ValueError(
                f"Y must have shape (batch, {self.n_features}) to match W of shape "
                f"({self.n_features}, {self.n_atoms}), got {tuple(Y_t.shape)}"
            )
        return Y_t

    def extra_repr(self) -> str:
        return (f"n_features={self.n_features}, n_atoms={self.n_atoms}, lam={self.lam}, "
                f"n_steps={self.n_steps}, variant={self.variant!r}, tied={self.tied}"
                + (f", support={self.support}" if self.support else ""))


def _cosine(lr: float, step: int, total: int) -> float:
    """Cosine decay from ``lr`` to ``lr·FINAL_LR_FRACTION`` over ``total`` updates."""
    frac = 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))
    return lr * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * frac)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Adam's per-parameter state as flat named tensors (checkpoints hold no pickles)."""
    out = {}
    for i, (_, state) in enumerate(_param_states(optimizer)):
        for key, value in state.items():
            out[f"optim.{i}.{key}"] = torch.as_tensor(value)
    return out


def _param_states(optimizer: torch.optim.Optimizer):
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return [(p, optimizer.state.get(p, {})) for p in params]


def _load_optimizer(optimizer, tensors: dict[str, torch.Tensor], device) -> None:
    for i, (p, _) in enumerate(_param_states(optimizer)):
        prefix = f"optim.{i}."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not state:
            continue
        for key, value in state.items():
            state[key] = value if key == "step" else value.to(device, p.dtype)
        optimizer.state[p] = state


class _EpochStats(EpochRecord):
    """Running relative code error over one epoch, published to the history as it goes."""

    def __init__(self, history: list, epoch: int) -> None:
        super().__init__(history, epoch)
        self.err = self.ref = 0.0
        self.lr = float("nan")

    @property
    def code_error(self) -> float:
        return self.err / self.ref if self.ref > 0 else float("nan")

    def add(self, err: torch.Tensor, ref: torch.Tensor, lr: float) -> None:
        self.err += float(err)
        self.ref += float(ref)
        self.lr = lr
        self.publish(partial=True)

    def values(self) -> dict[str, Any]:
        return {"code_error": self.code_error, "sum_error": self.err, "sum_target": self.ref,
                "lr": self.lr}

    def restore(self, entry: dict[str, Any]) -> None:
        self.err, self.ref = entry["sum_error"], entry["sum_target"]


__all__ = ["LISTA", "VARIANTS"]
