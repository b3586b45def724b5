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
  ``θ_k`` per step; ``W_e`` is shared because ``W_e y`` is computed once per signal, unless
  ``per_step_input=True``: then each step has its own input matrix,
  ``z_{k+1} = shrink_{θ_k}(α_k W_{e,k} y + S_k z_k)`` (one more ``(n_atoms, n_features)``
  matrix per step, every ``W_{e,k} y`` computed by one matrix product), which also applies to
  the classic head of ``"hybrid"``.
- ``"cp"``: LISTA-CP, the coupled form of Chen, Liu, Wang & Yin (2018),
  ``z_{k+1} = shrink_{θ_k}(z_k + V_kᵀ(y − W z_k))`` with ``V_k`` ``(n_features, n_atoms)``
  initialised to ``W/L`` (untied: one ``V_k`` per step).
- ``"step"``: ALISTA-like (Liu, Chen, Wang & Yin 2019), only per-step scalar step sizes ``γ_k``
  and thresholds ``θ_k`` are learned: ``z_{k+1} = shrink_{θ_k}(z_k − γ_k Wᵀ(W z_k − y))``.
- ``"hybrid"``: classic LISTA for the first ``head`` layers, which find the support, then
  layers that take a learned share ``c_k`` of a conjugate-gradient step on the current support
  and a proximal gradient step with learned per-atom step sizes ``γ_k`` whose threshold is
  ``λγ_k``: each of these layers keeps the lasso's solution as its fixed point (without
  support selection, whose bypassed entries skip the threshold), so depth keeps paying
  (Ablin, Moreau, Massias & Gramfort 2019 learn scalar steps; the conjugate-gradient move is
  computed per sample).

Support selection (``support=p``, any variant; "LISTA-CPSS" of Chen et al. 2018 for ``"cp"``): at
step ``k`` (1-based) the ``min(k·p, p_max)·n_atoms`` entries of largest magnitude of each sample
that the threshold keeps bypass the shrinkage (they are not pulled towards zero), which removes
the soft threshold's bias on the (by then well identified) support. ``support=0`` (default) is
plain LISTA, so the untrained network still equals ISTA.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import torch
from torch import nn

from .._docs import fill_doc
from .._validation import (
    as_tensor,
    check_choice,
    check_int,
    check_lam,
    check_scalar,
    resolve_device,
)
from ..operators import DenseDictionary
from ..problem import Problem, to_output
from ..regularizers import Regularizer, get_regularizer
from ..solvers import SolverResult
from ..solvers.api import resolve_method
from ..training import distributed as dist
from ..training.checkpoint import tensor_digest
from ..training.early_stopping import EarlyStopping
from ..training.fit_options import FitOptions, with_fit_options
from ..training.history import EpochRecord
from ..training.schedules import cosine_schedule
from ._base import DenseLassoConfig, LatentModel, ModelConfig, codes_only, dtype_name

VARIANTS = ("lista", "cp", "step", "hybrid")
FINAL_LR_FRACTION = 0.01
#: checkpoint prefix of the best weights kept by early stopping
BEST = "best."
#: the classic layers' parameters of the ``"hybrid"`` variant (``fit(train_head=False)``)
HEAD_PARAMETERS = ("W_e", "alpha", "S", "theta")

#: without ``support_max``, the selected fraction stops growing after this many steps
SUPPORT_MAX_STEPS = 5


@dataclasses.dataclass(frozen=True)
class LISTAConfig(DenseLassoConfig):
    """The one source of a :class:`LISTA`'s arguments (the dictionary itself is a buffer)."""

    n_steps: int = 3
    variant: str = "lista"
    tied: bool = False
    nonneg: bool = False
    support: float = 0.0
    support_max: float = 0.0
    head: int = 3
    per_step_input: bool = False


# ----------------------------------------------------------------- the one ISTA step
def ista_step(v: torch.Tensor, theta: torch.Tensor, reg: Regularizer, keep: int) -> torch.Tensor:
    """``z = shrink_θ(v)``, the proximal step every variant ends each layer with.

    With support selection (``keep > 0``) the ``keep`` largest entries of each sample that the
    threshold keeps bypass the shrinkage (the selection carries no gradient).

    Parameters
    ----------
    v : torch.Tensor of shape (batch, n_atoms)
        Pre-activation.
    theta : torch.Tensor of shape (n_atoms,) or (1,)
        The layer's threshold(s), broadcast against ``v``.
    reg : Regularizer
        The penalty whose ``prox`` is applied (L1 or non-negative L1).
    keep : int
        Number of entries per sample that bypass the shrinkage (0: none).

    Returns
    -------
    torch.Tensor of shape (batch, n_atoms)
    """
    z = reg.prox(v, theta)
    if keep == 0:
        return z
    a = v.detach().abs()
    cut = a.topk(keep, dim=1).values[:, -1:]
    return torch.where((a >= cut) & (z != 0), v, z)


class _StepRule(abc.ABC):
    """How one variant forms its layers; the subclasses' methods take the arguments below.

    ``init(net, W, inv_L)`` creates the variant's parameters on ``net`` from the dictionary
    ``W`` ``(n_features, n_atoms)`` and ``inv_L = 1/L`` (0-dim) so that the network is K ISTA
    steps. ``first(net, Y)`` maps the signals ``Y`` ``(batch, n_features)`` to the first
    pre-activation ``v_0`` ``(batch, n_atoms)`` and a ``context`` the later layers reuse.
    ``next(net, z, k, context)`` gives layer ``k``'s pre-activation from the last iterate
    ``z`` ``(batch, n_atoms)``, ``threshold(net, k)`` its threshold(s) ``(n_atoms,)`` or
    ``(1,)``, and ``layer(net, z, k, context)`` the next iterate, by default
    :func:`ista_step` of the two. ``used_rows(net, name)`` and ``added_row(net, name, row)``
    tell :meth:`LISTA.grow` how many rows of the per-step parameter ``name`` a network uses
    and what an added step, the identity, holds.
    """

    @abc.abstractmethod
    def init(self, net: LISTA, W: torch.Tensor, inv_L: torch.Tensor) -> None: ...

    @abc.abstractmethod
    def first(self, net: LISTA, Y: torch.Tensor) -> tuple[torch.Tensor, Any]: ...

    @abc.abstractmethod
    def next(self, net: LISTA, z: torch.Tensor, k: int, context: Any) -> torch.Tensor: ...

    def layer(self, net: LISTA, z: torch.Tensor, k: int, context: Any) -> torch.Tensor:
        return ista_step(self.next(net, z, k, context), self.threshold(net, k), net.reg,
                         net.selected(k))

    def threshold(self, net: LISTA, k: int) -> torch.Tensor:
        return net.at(net.theta, k)

    def used_rows(self, net: LISTA, name: str) -> int:
        return net.n_steps - 1 if name == "S" else net.n_steps

    def added_row(self, net: LISTA, name: str, row: torch.Tensor) -> torch.Tensor:
        if name == "S":
            return torch.eye(net.n_atoms, dtype=row.dtype, device=row.device)
        return torch.zeros_like(row)


def _input_weights(W: torch.Tensor, inv_L: torch.Tensor, n_inputs: int,
                  per_step: bool) -> nn.Parameter:
    """The classic layers' input matrix ``W_e = Wᵀ/L``, one copy per step with ``per_step``.

    Parameters
    ----------
    W : torch.Tensor of shape (n_features, n_atoms)
        The dictionary.
    inv_L : torch.Tensor of shape ()
        ``1/L``.
    n_inputs : int
        Number of classic layers (copies made with ``per_step``).
    per_step : bool
        One matrix per layer instead of one shared matrix.

    Returns
    -------
    torch.nn.Parameter of shape (n_atoms, n_features), or (n_inputs, n_atoms, n_features)
        with per_step
    """
    W_e = W.T * inv_L
    return nn.Parameter(W_e.expand(n_inputs, -1, -1).clone() if per_step else W_e)


class _ClassicRule(_StepRule):
    """LISTA: ``v_0 = α_0 W_e y``, ``v_k = α_k W_e y + S_k z_k`` with ``W_e = Wᵀ/L``,
    ``α = 1``, ``S = I − WᵀW/L`` and ``θ = λ/L`` initially; the context is ``W_e y``
    ``(batch, n_atoms)``, or with ``per_step_input`` every layer's ``W_{e,k} y``
    ``(batch, n_layers, n_atoms)``."""

    def init(self, net, W, inv_L):
        K, count = net.n_steps, net.count
        eye = torch.eye(net.n_atoms, dtype=W.dtype, device=W.device)
        net.W_e = _input_weights(W, inv_L, count(K), net.per_step_input)
        net.alpha = nn.Parameter(torch.ones(count(K), dtype=W.dtype, device=W.device))
        net.S = nn.Parameter((eye - (W.T @ W) * inv_L).expand(count(K - 1), -1, -1).clone())
        net.theta = nn.Parameter((net.lam * inv_L).expand(count(K), net.n_atoms).clone())

    def first(self, net, Y):
        if net.per_step_input:  # all layers' input terms in one product
            n_inputs = net.W_e.shape[0]
            B = (Y @ net.W_e.reshape(-1, net.n_features).T).reshape(-1, n_inputs, net.n_atoms)
        else:
            B = Y @ net.W_e.T
        return self.input_term(net, B, 0), B

    def next(self, net, z, k, B):
        S = net.S[0] if net.tied else net.S[k - 1]
        return self.input_term(net, B, k) + z @ S.T

    @staticmethod
    def input_term(net, B, k):
        """Layer ``k``'s ``α_k W_e y`` (``α_k W_{e,k} y``) from the context ``B``."""
        return net.at(net.alpha, k) * (B[:, k] if net.per_step_input else B)

    def added_row(self, net, name, row):
        if name == "W_e":  # behind α = 0; ISTA's input so that α starts with a gradient
            return net.W.T / net.L
        return super().added_row(net, name, row)


class _CoupledRule(_StepRule):
    """LISTA-CP: ``v_0 = V_0ᵀy``, ``v_k = z + V_kᵀ(y − W z)`` (computed as
    ``z + Vᵀy − (VᵀW) z``) with ``V = W/L`` and ``θ = λ/L`` initially; the context is ``y``."""

    def init(self, net, W, inv_L):
        count = net.count
        net.V = nn.Parameter((W * inv_L).expand(count(net.n_steps), -1, -1).clone())
        net.theta = nn.Parameter((net.lam * inv_L).expand(count(net.n_steps), net.n_atoms)
                                 .clone())

    def first(self, net, Y):
        return Y @ net.V[0], Y

    def next(self, net, z, k, Y):
        V = net.V[0] if net.tied else net.V[k]
        return z + Y @ V - z @ (V.T @ net.W).T


class _StepSizeRule(_StepRule):
    """ALISTA-like: ``v_0 = γ_0 Wᵀy``, ``v_k = z − γ_k (G z − Wᵀy)`` with ``G = WᵀW`` (a
    buffer); only ``γ = 1/L`` and a scalar ``θ = λ/L`` per layer are learned; the context is
    ``Wᵀy``."""

    def init(self, net, W, inv_L):
        count = net.count
        net.gamma = nn.Parameter(inv_L.repeat(count(net.n_steps)))
        net.theta = nn.Parameter((net.lam * inv_L).expand(count(net.n_steps), 1).clone())
        net.register_buffer("G", W.T @ W)

    def first(self, net, Y):
        b = Y @ net.W
        return net.at(net.gamma, 0) * b, b

    def next(self, net, z, k, b):
        return z - net.at(net.gamma, k) * (z @ net.G - b)


class _HybridRule(_StepRule):
    """Classic LISTA for the first ``head`` layers (they find the support), then layers that
    take a learned share of a conjugate-gradient step on the current support before a
    proximal gradient step with learned per-atom step sizes.

    On the support ``S`` of ``z`` (signs ``σ``) the lasso is the quadratic
    ``½‖y − W_S z_S‖² + λ σᵀz_S``, whose gradient is ``g = (G z − Wᵀy + λσ)`` restricted to
    ``S``. Layer ``k`` of the tail takes the Fletcher–Reeves direction
    ``p = −g + (‖g‖² / ‖g_prev‖²) p_prev`` (on ``S``), the exact minimiser ``α`` of the
    quadratic along it, moves ``u = z + c_k α p`` with entries that would change sign set to 0
    (the orthant, as OWL-QN does), then ``z_{k+1} = shrink_{λγ}(u − γ ⊙ (G u − Wᵀy))`` with
    ``γ = s_k / L``, which adds and drops atoms. Conjugate gradients solve a quadratic on ~20
    atoms in a handful of steps where ISTA needs hundreds; the per-sample ``α`` and direction
    are computed, not learned.

    The threshold is tied to the step and the conjugate-gradient move vanishes at the lasso's
    solution, so every tail layer keeps that solution as its fixed point (with ``support > 0``
    the bypassed entries skip the ``λγ`` threshold and move off it by ``λγ``). The parameters are
    the classic ones of the first ``min(K, head)`` layers, ``step`` (``s``,
    ``(max(K − head, 1), n_atoms)``) and ``cg`` (``c``, ``(max(K − head, 1),)``); ``s = 1``
    (ISTA's step) and ``c = 0`` initially, so the untrained network is K ISTA steps, and
    ``s`` is clipped at 0. The context is a dict: ``W_e y``, ``Wᵀy`` and the last direction
    and gradient.
    """

    classic = _ClassicRule()

    def init(self, net, W, inv_L):
        head, tail = min(net.n_steps, net.head), max(net.n_steps - net.head, 1)
        eye = torch.eye(net.n_atoms, dtype=W.dtype, device=W.device)
        net.W_e = _input_weights(W, inv_L, head, net.per_step_input)
        net.alpha = nn.Parameter(torch.ones(head, dtype=W.dtype, device=W.device))
        net.S = nn.Parameter((eye - (W.T @ W) * inv_L).expand(max(head - 1, 1), -1, -1).clone())
        net.theta = nn.Parameter((net.lam * inv_L).expand(head, net.n_atoms).clone())
        net.step = nn.Parameter(torch.ones(tail, net.n_atoms, dtype=W.dtype, device=W.device))
        net.cg = nn.Parameter(torch.zeros(tail, dtype=W.dtype, device=W.device))
        net.register_buffer("G", W.T @ W)

    def first(self, net, Y):
        v, B = self.classic.first(net, Y)
        b = Y @ net.W if net.n_steps > net.head else None  # only the later layers use Wᵀy
        return v, {"B": B, "b": b, "direction": None, "gradient": None}

    def next(self, net, z, k, context):
        return self.classic.next(net, z, k, context["B"])

    def layer(self, net, z, k, context):
        if k < net.head:
            return super().layer(net, z, k, context)
        t = k - net.head
        tiny = torch.finfo(z.dtype).tiny
        on_support = (z != 0).to(z.dtype)
        g = (z @ net.G - context["b"] + net.lam * torch.sign(z)) * on_support
        p = -g
        if context["direction"] is not None:
            ratio = g.pow(2).sum(1, keepdim=True) / context["gradient"].pow(2).sum(
                1, keepdim=True).clamp_min(tiny)
            p = p + ratio * context["direction"] * on_support
        Gp = p @ net.G
        alpha = -(g * p).sum(1, keepdim=True) / (p * Gp).sum(1, keepdim=True).clamp_min(tiny)
        context["direction"], context["gradient"] = p, g
        u = z + (net.cg[t] * alpha) * p
        u = torch.where(torch.sign(u) == torch.sign(z), u, torch.zeros_like(u))
        gamma = net.step[t].clamp_min(0) / net.L
        return ista_step(u - gamma * (u @ net.G - context["b"]), net.lam * gamma, net.reg,
                         net.selected(k))

    def added_row(self, net, name, row):
        return self.classic.added_row(net, name, row)

    def used_rows(self, net, name):
        if name in ("step", "cg"):
            return max(net.n_steps - net.head, 0)
        head = min(net.n_steps, net.head)
        return head - 1 if name == "S" else head


STEP_RULES: dict[str, _StepRule] = {"lista": _ClassicRule(), "cp": _CoupledRule(),
                                    "step": _StepSizeRule(), "hybrid": _HybridRule()}


def unroll(net: LISTA, Y: torch.Tensor) -> list[torch.Tensor]:
    """All K iterates of ``net`` on signals ``Y`` (already validated; differentiable).

    Parameters
    ----------
    net : LISTA
        The network.
    Y : torch.Tensor of shape (batch, n_features)
        Signals.

    Returns
    -------
    list of torch.Tensor of shape (batch, n_atoms)
        ``[z_1, ..., z_K]``.
    """
    rule = STEP_RULES[net.variant]
    v, context = rule.first(net, Y)
    z = ista_step(v, rule.threshold(net, 0), net.reg, net.selected(0))
    zs = [z]
    for k in range(1, net.n_steps):
        z = rule.layer(net, z, k, context)
        zs.append(z)
    return zs


@fill_doc
class LISTA(LatentModel):
    """Learned ISTA encoder for the energy ``½‖y − Wz‖² + λ‖z‖₁`` (``nonneg``: ``z ≥ 0``).

    Parameters
    ----------
    W : array or tensor, shape (n_features, n_atoms)
        The dictionary (the module takes its dtype, and its device unless ``device`` is
        given).
    lam : float
        λ ≥ 0.
    n_steps : int
        K ≥ 1 layers.
    variant : {"lista", "cp", "step", "hybrid"}
        The step rule (:data:`STEP_RULES`).
    tied : bool
        One set of weights shared by every layer.
    nonneg : bool
        Non-negative codes.
    lipschitz : float, optional
        ``L ≥ λ_max(WᵀW)``; by default the library's power-iteration estimate.
    seed : int
        Seeds the epoch order.
    support, support_max : float
        Support selection (fraction of entries per layer that bypass the shrinkage).
    head : int
        ``"hybrid"`` only: how many leading layers are classic LISTA.
    per_step_input : bool
        ``"lista"`` (untied) and ``"hybrid"`` only: one input matrix ``W_{e,k}``
        ``(n_atoms, n_features)`` per classic layer instead of one shared ``W_e``; each starts
        as ``Wᵀ/L``, so the untrained network is still K ISTA steps.
    device : str or torch.device or None
        Where the module lives (default: ``W``'s device, the CPU for NumPy input).

    ``model(Y)`` maps signals ``(batch, n_features)`` to codes ``(batch, n_atoms)`` with
    gradients and no checks; :meth:`encode` is the validated, no-grad entry point.
    """

    KIND = "lista"
    Config = LISTAConfig
    TRAINING_STATE = ("n_updates_", "history_")
    RESUME_SAME_BUFFERS = ("W",)

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
        head: int = 3,
        per_step_input: bool = False,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__()
        W_t = as_tensor(W, "W", ndim=2).detach().clone()
        if device is not None:
            W_t = W_t.to(resolve_device(device))
        check_choice(variant, "variant", VARIANTS)
        if not isinstance(tied, bool):
            raise TypeError(f"tied must be a bool, got {type(tied).__name__}")
        if not isinstance(per_step_input, bool):
            raise TypeError(f"per_step_input must be a bool, got {type(per_step_input).__name__}")
        if per_step_input and (tied or variant not in ("lista", "hybrid")):
            raise ValueError("per_step_input applies to the untied lista and hybrid variants "
                             f"only, got variant={variant!r}, tied={tied}")
        support = check_scalar(support, "support", low=0.0, high=1.0)
        if support_max is None:
            support_max = min(1.0, SUPPORT_MAX_STEPS * support)
        self.config = LISTAConfig(
            n_features=W_t.shape[0], n_atoms=W_t.shape[1], lam=check_lam(lam),
            n_steps=check_int(n_steps, "n_steps", low=1), variant=variant, tied=tied,
            nonneg=nonneg, seed=seed, support=support,
            support_max=check_scalar(support_max, "support_max", low=0.0, high=1.0),
            head=check_int(head, "head", low=1), per_step_input=per_step_input,
            dtype=dtype_name(W_t.dtype))
        if variant == "hybrid" and tied:
            raise ValueError("the hybrid variant has no tied form (its layers differ)")
        if lipschitz is None:
            L = DenseDictionary(W_t).lipschitz((self.n_features,)).detach().clone()
        else:
            L = torch.tensor(check_scalar(lipschitz, "lipschitz", low=0.0, low_inclusive=False),
                             dtype=W_t.dtype, device=W_t.device)
        self.register_buffer("W", W_t)
        self.register_buffer("L", L)
        self.reg = get_regularizer(self.nonneg)
        STEP_RULES[variant].init(self, W_t, 1.0 / L)
        self.n_updates_ = 0
        self.history_: list[dict[str, float]] = []
        self._target_cache: tuple[tuple, torch.Tensor] | None = None

    @classmethod
    def from_config(cls, config: ModelConfig, *, device: str | torch.device | None = None
                    ) -> LISTA:
        """A network of ``config``'s shape (weights to be loaded from a checkpoint).

        Parameters
        ----------
        config : LISTAConfig
            The configuration saved in a checkpoint.
        device : str, torch.device or None, default=None
            Device of the network.

        Returns
        -------
        LISTA
            With placeholder weights (``W`` an identity-like matrix, ``L = 1``).
        """
        args = dataclasses.asdict(config)
        dtype = {"float32": torch.float32, "float64": torch.float64}[args.pop("dtype")]
        W = torch.eye(args.pop("n_features"), args.pop("n_atoms"), dtype=dtype)
        return cls(W, args.pop("lam"), args.pop("n_steps"), lipschitz=1.0, device=device,
                   **args)

    # ----------------------------------------------------------------- parameters
    def count(self, per_step: int) -> int:
        """How many copies of a per-step tensor: 1 when tied, else ``per_step`` (at least 1, so
        a 1-step network keeps one unused ``S`` and every depth has the same tensor names).

        Parameters
        ----------
        per_step : int
            Number of layers that use the tensor.

        Returns
        -------
        int
        """
        return 1 if self.tied else max(per_step, 1)

    def at(self, p: torch.Tensor, k: int) -> torch.Tensor:
        """Layer ``k``'s slice of a per-step parameter.

        Parameters
        ----------
        p : torch.Tensor of shape (count, ...)
            A per-step parameter.
        k : int
            Layer index (0-based).

        Returns
        -------
        torch.Tensor of shape p.shape[1:]
        """
        return p[0] if self.tied else p[k]

    def selected(self, k: int) -> int:
        """How many entries per sample bypass the threshold at layer ``k``.

        Parameters
        ----------
        k : int
            Layer index (0-based).

        Returns
        -------
        int
            ``round(min((k + 1)·support, support_max)·n_atoms)``; 0 without support selection.
        """
        if self.support == 0:
            return 0
        frac = min((k + 1) * self.support, self.support_max)
        return min(int(round(frac * self.n_atoms)), self.n_atoms)

    def grow(self, n_steps: int) -> LISTA:
        """A deeper copy. Untied, it computes exactly what this network computes: its first K
        steps carry this network's (trained) weights and every added step starts as the
        identity (``α = 0, S = I`` for classic LISTA, ``V = 0`` for CP, ``γ = 0`` for
        step-only, and ``θ = 0``; with ``per_step_input`` its input matrix starts as ``Wᵀ/L``,
        behind ``α = 0``), so training the deeper network starts from the shallower one's
        error. Tied, its one set of weights serves every step, so the copy runs the same step
        more times: its codes differ from this network's (closer to the fixed point the shared
        step converges to, not to this network's output).

        Parameters
        ----------
        n_steps : int
            Depth of the copy, at least the current one.

        Returns
        -------
        LISTA
            A new network (training counters and history are not copied).
        """
        n_steps = check_int(n_steps, "n_steps", low=self.n_steps)
        deeper = LISTA(self.W, self.lam, n_steps, variant=self.variant, tied=self.tied,
                       nonneg=self.nonneg, lipschitz=float(self.L), seed=self.seed,
                       support=self.support, support_max=self.support_max, head=self.head,
                       per_step_input=self.per_step_input)
        rule = STEP_RULES[self.variant]
        with torch.no_grad():
            for name, p in deeper.named_parameters():
                mine = getattr(self, name)
                if (name == "W_e" and not self.per_step_input) or self.tied:
                    p.copy_(mine)
                    continue
                have = rule.used_rows(self, name)
                p[:have] = mine[:have]
                for row in range(have, rule.used_rows(deeper, name)):
                    p[row] = rule.added_row(deeper, name, p[row])
        return deeper

    # ----------------------------------------------------------------- inference
    def forward(self, Y: torch.Tensor, every_step: bool = False) -> torch.Tensor:
        """Codes of validated signals, with gradients and no checks.

        Parameters
        ----------
        Y : torch.Tensor of shape (batch, n_features)
            Signals.
        every_step : bool, default=False
            Return every iterate instead of the last.

        Returns
        -------
        torch.Tensor of shape (batch, n_atoms), or (n_steps, batch, n_atoms) with every_step
            The last iterate ``z_K`` (or ``z_1 .. z_K``).
        """
        return torch.stack(unroll(self, Y)) if every_step else unroll(self, Y)[-1]

    def unroll(self, Y: torch.Tensor) -> list[torch.Tensor]:
        """All K iterates for an already validated ``Y`` (see :func:`unroll`).

        Parameters
        ----------
        Y : torch.Tensor of shape (batch, n_features)
            Signals.

        Returns
        -------
        list of torch.Tensor of shape (batch, n_atoms)
        """
        return unroll(self, Y)

    def encode(self, Y: Any) -> SolverResult:
        """Codes of ``Y`` without gradient (NumPy in, NumPy out).

        Parameters
        ----------
        {Y_dense_any}

        Returns
        -------
        SolverResult
            Holding ``z`` ``(batch, n_atoms)`` and ``n_iter = n_steps``.
        """
        Y_t, numpy_out = self._check_signals(Y)
        with torch.no_grad():
            Z = self(Y_t)
        return codes_only(to_output(Z, numpy_out), self.n_steps)

    def dictionary(self) -> torch.Tensor:
        """The dictionary ``W`` ``(n_features, n_atoms)`` the network was built from."""
        return self.W

    def targets(self, Y: Any, *, tol: float | None = None, max_iter: int = 5000) -> torch.Tensor:
        """Optimal codes ``z*`` of ``Y`` to a relative duality gap ``tol``, by the solver
        ``solve(method="auto")`` picks (on the CPU the compiled coordinate descent, which solves
        float32 signals in float64; FISTA in float32 stopped at the iteration cap above 1e-5
        on most MNIST digits at λ = 0.05).

        Parameters
        ----------
        {Y_dense_any}
        tol : float or None, default=None
            Relative duality gap; default 1e-5 in float32, 1e-10 in float64.
        max_iter : int, default=5000
            Iteration cap (of the method's iterations or rounds, ``result.n_iter``).

        Returns
        -------
        torch.Tensor of shape (batch, n_atoms)
        """
        Y_t, _ = self._check_signals(Y)
        if tol is None:
            tol = 1e-10 if Y_t.dtype == torch.float64 else 1e-5
        tol = check_scalar(tol, "tol", low=0.0)
        max_iter = check_int(max_iter, "max_iter", low=1)
        problem = Problem(Y_t, DenseDictionary(self.W.detach(), check_input=False), self.lam,
                          numpy_out=False)
        with torch.no_grad():
            out = resolve_method("auto", problem, self.reg).run(
                problem, self.reg, None, tol=tol, max_iter=max_iter, callback=None)
        return out.warn_unless_converged("optimal codes").z

    # ----------------------------------------------------------------- training
    @with_fit_options(epochs=50, batch_size=256, checkpoint_every=200, batch="Global mini-batch",
                      epochs_note=" (also the length of the cosine schedule)", unit="update",
                      callback_args="n_updates, model")
    def fit(
        self,
        Y: Any,
        *,
        lr: float = 1e-3,
        targets: Any = None,
        tol: float | None = None,
        max_iter: int = 5000,
        max_grad_norm: float | None = 1.0,
        project_input: bool = True,
        validation: tuple[Any, Any] | None = None,
        patience: int | None = None,
        layer_weight: float = 0.0,
        train_head: bool = True,
        options: FitOptions,
    ) -> list[dict[str, float]]:
        """Regress the optimal codes of ``Y`` through the K steps.

        Adam with step ``lr``, cosine-decayed to ``lr/100`` over ``epochs``
        (``torch.optim.lr_scheduler``); loss ``Σ‖z̄ − z*‖² / Σ‖z*‖²`` per mini-batch (plus
        ``layer_weight`` times the mean of the same error at the K − 1 earlier steps);
        deterministic epoch order from ``seed``. With ``validation``, the held-out code error
        is measured after every epoch, the weights of the best epoch are kept and restored at
        the end, and ``patience`` epochs without a new best stop training early. A NaN/inf
        loss, weight or optimizer state stops training with ``FloatingPointError`` naming the
        step and the last good checkpoint.

        Under ``torchrun`` the model trains as ``DistributedDataParallel``: ``batch_size`` is
        the global batch, each process takes its share of it, and the weights are those one
        process gets on the same batches; rank 0 alone writes the checkpoint.

        Parameters
        ----------
        {fit_signals}
        {fit_batches}
        lr : float, default=1e-3
            Initial Adam step.
        targets : array-like, torch.Tensor of shape (n_samples, n_atoms) or None, default=None
            The optimal codes if already known; otherwise computed once by :meth:`targets` (to
            ``tol``) and cached for later calls on the same tensor.
        tol : float or None, default=None
            Tolerance of :meth:`targets`.
        max_iter : int, default=5000
            Iteration cap of :meth:`targets`.
        max_grad_norm : float or None, default=1.0
            Gradients are clipped to this norm (``None``: no clipping).
        project_input : bool, default=True
            After every update, project the input weights (``W_e`` of ``"lista"``, the ``V_k``
            of ``"cp"``) onto the range of ``W`` (the lasso depends on ``y`` only through
            ``Wᵀy``).
        validation : (array-like, array-like) or None, default=None
            Held-out signals ``(n_val, n_features)`` and their optimal codes
            ``(n_val, n_atoms)``; their relative code error is the history's
            ``val_code_error``.
        patience : int or None, default=None
            With ``validation``: stop after this many epochs without a new best (``None``: run
            every epoch, still ending on the best weights).
        layer_weight : float, default=0.0
            Weight of the earlier steps' mean code error in the loss (deep supervision; 0: the
            last step only).
        train_head : bool, default=True
            ``"hybrid"`` only: ``False`` keeps the classic head's weights as they are and
            trains the later layers alone (layer-wise training of a grown network).
        {fit_options}

        Returns
        -------
        list of dict
            The per-epoch history: relative code error (and ``val_code_error``), learning
            rate, seconds.
        """
        Y_t, _ = self._check_signals(Y)
        n = Y_t.shape[0]
        options = options.checked(n)
        epochs, batch_size = options.epochs, options.batch_size
        lr = check_scalar(lr, "lr", low=0.0, low_inclusive=False)
        if max_grad_norm is not None:
            max_grad_norm = check_scalar(max_grad_norm, "max_grad_norm", low=0.0,
                                         low_inclusive=False)
        if not isinstance(project_input, bool):
            raise TypeError(f"project_input must be a bool, got {type(project_input).__name__}")
        layer_weight = check_scalar(layer_weight, "layer_weight", low=0.0)
        if not isinstance(train_head, bool):
            raise TypeError(f"train_head must be a bool, got {type(train_head).__name__}")
        if not train_head and self.variant != "hybrid":
            raise ValueError("train_head=False applies to the hybrid variant only")
        if not train_head and self.n_steps <= self.head:
            raise ValueError(f"train_head=False leaves nothing to train: the network's "
                             f"{self.n_steps} layers are all in its head (head={self.head})")
        held_out = None if validation is None else self._check_validation(validation)
        if patience is not None:
            if held_out is None:
                raise ValueError("patience needs validation data")
            patience = check_int(patience, "patience", low=1)
        fit_args = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "n_samples": n,
                    "max_grad_norm": max_grad_norm, "project_input": project_input,
                    "validation": None if held_out is None else held_out[0].shape[0],
                    "patience": patience, "layer_weight": layer_weight}
        if not train_head:
            fit_args["train_head"] = False
        frozen = set(HEAD_PARAMETERS if not train_head else ())
        trained = [p for name, p in self.named_parameters() if name not in frozen]
        basis = self._range_basis() if project_input and train_head else None
        optimizer = torch.optim.Adam(trained, lr=lr)
        steps = epochs * -(-n // batch_size)
        scheduler = cosine_schedule(optimizer, steps, FINAL_LR_FRACTION)
        own_targets = targets is None
        start, Z_star = (0, 0), None
        best: dict[str, torch.Tensor] | None = None
        done_before: tuple[float, ...] = ()  # this fit's finished epochs (a resumed one's)
        if options.resuming:
            state = self.resume_from(options.checkpoint, fit_args, optimizer=optimizer,
                                     scheduler=scheduler)
            start, Z_star = state.position, state.extra.get("targets")
            best = {k[len(BEST):]: v for k, v in state.extra.items() if k.startswith(BEST)}
            # the last start[0] closed epochs are this fit's (earlier fits' come before them)
            closed = [h for h in self.history_ if not h["partial"]]
            done_before = tuple(h["val_code_error"] for h in closed[len(closed) - start[0]:]
                                if "val_code_error" in h)
        if Z_star is None:
            Z_star = self._training_targets(Y_t, targets, tol, max_iter)
            self._refuse_zero_targets(Y_t, Z_star)
        stopper = EarlyStopping(self, patience, scores=done_before, best_state=best)

        def extra() -> dict[str, torch.Tensor]:
            tensors = {"targets": Z_star} if own_targets else {}
            tensors.update({BEST + k: v for k, v in (stopper.best_state or {}).items()})
            return tensors

        loop = self.training_loop(n, options, start=start, fit_args=fit_args,
                                  desc=f"LISTA-{self.n_steps} {self.variant}",
                                  optimizer=optimizer, scheduler=scheduler, extra=extra)
        flags = {name: getattr(self, name).requires_grad for name in frozen}
        for name in frozen:  # before DDP wraps the model, which then leaves them alone
            getattr(self, name).requires_grad_(False)
        try:
            self._train(loop, stopper, optimizer, Y_t, Z_star, held_out, max_grad_norm, basis,
                        layer_weight)
        finally:  # as the caller had them (a parameter frozen before stays frozen)
            for name, flag in flags.items():
                getattr(self, name).requires_grad_(flag)
        return self.history_

    def _train(self, loop, stopper, optimizer, Y_t, Z_star, held_out, max_grad_norm, basis,
               layer_weight) -> None:
        """The epochs of :meth:`fit`, ending on the best held-out weights."""
        model = dist.data_parallel(self)
        with loop:
            for epoch in loop.epochs():
                if stopper.should_stop:
                    break
                stats = _EpochStats.open(self.history_, epoch.index, resumed=epoch.resumed)
                for b in epoch:
                    lr_now = optimizer.param_groups[0]["lr"]
                    mine = dist.shard(b.idx)
                    err, ref = self._update(optimizer, Y_t[mine], Z_star[mine], max_grad_norm,
                                            basis, model=model, layer_weight=layer_weight,
                                            ref=Z_star[b.idx].pow(2).sum())
                    stats.add(err, ref, lr_now)
                    self.n_updates_ += 1
                    loop.step_done(b, self.n_updates_, loss=err,
                                   postfix={"code_error": f"{stats.code_error:.3g}"})
                if held_out is not None:
                    stats.val_code_error = self._held_out_error(*held_out)
                    stopper.update(stats.val_code_error)
                stats.close()
            stopper.restore()

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
            if self.variant in ("lista", "hybrid"):
                self.W_e.copy_((self.W_e @ Q) @ Q.T)
            elif self.variant == "cp":
                self.V.copy_(Q @ (Q.T @ self.V))

    def _update(self, optimizer, Yb: torch.Tensor, Zb: torch.Tensor, max_grad_norm, basis=None,
                model: nn.Module | None = None, ref: torch.Tensor | None = None,
                layer_weight: float = 0.0):
        """One step on this process's rows ``Yb``, ``Zb`` of a batch whose targets have squared
        norm ``ref`` in all (default: ``Zb``'s); ``model`` is ``self`` or its DDP wrapper, whose
        gradient average over the processes is then the whole batch's gradient. Returns the
        batch's squared code error (summed over the processes) at the last step and ``ref``."""
        optimizer.zero_grad(set_to_none=True)
        net = self if model is None else model
        if layer_weight and self.n_steps > 1:
            per_step = (net(Yb, every_step=True) - Zb).pow(2).sum(dim=(1, 2))
            err, loss = per_step[-1], per_step[-1] + layer_weight * per_step[:-1].mean()
        else:
            err = loss = (net(Yb) - Zb).pow(2).sum()
        ref = Zb.pow(2).sum() if ref is None else ref
        (loss * dist.world_size() / ref.clamp_min(torch.finfo(ref.dtype).tiny)).backward()
        if max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.parameters(), max_grad_norm)
        optimizer.step()
        if basis is not None:
            self._project_input(basis)
        return dist.all_reduce_(err.detach(), what="of the code error"), ref

    def _check_validation(self, validation: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise TypeError("validation must be a pair (signals, optimal codes)")
        Yv, _ = self._check_signals(validation[0])
        Zv = as_tensor(validation[1], "validation codes", ndim=2).to(self.W.device, self.W.dtype)
        if tuple(Zv.shape) != (Yv.shape[0], self.n_atoms):
            raise ValueError(f"validation codes must have shape ({Yv.shape[0]}, {self.n_atoms}), "
                             f"got {tuple(Zv.shape)}")
        return Yv, Zv

    def _held_out_error(self, Yv: torch.Tensor, Zv: torch.Tensor) -> float:
        with torch.no_grad():
            err = sum(float((self(Y) - Z).pow(2).sum())
                      for Y, Z in zip(Yv.split(4096), Zv.split(4096), strict=True))
        return err / max(float(Zv.pow(2).sum()), torch.finfo(Zv.dtype).tiny)

    def _training_targets(self, Y, targets, tol, max_iter) -> torch.Tensor:
        if targets is not None:
            Z = as_tensor(targets, "targets", ndim=2).to(self.W.device, self.W.dtype)
            if tuple(Z.shape) != (Y.shape[0], self.n_atoms):
                raise ValueError(
                    f"targets must have shape ({Y.shape[0]}, {self.n_atoms}), got {tuple(Z.shape)}"
                )
            return Z
        # the content of the data and of the dictionary, not their addresses: a new array of
        # the same shape often reuses the old one's memory, NumPy writes do not bump torch's
        # version counter, and load_state_dict can bring other atoms
        key = (str(Y.device), tensor_digest({"Y": Y, "W": self.W}), self.lam, tol, max_iter)
        if self._target_cache is None or self._target_cache[0] != key:
            self._target_cache = (key, self.targets(Y, tol=tol, max_iter=max_iter))
        return self._target_cache[1]

    def _refuse_zero_targets(self, Y: torch.Tensor, Z_star: torch.Tensor) -> None:
        """A clear error where every target code is zero (the relative code error is 0/0)."""
        if bool(Z_star.any()):
            return
        lam_max = float((Y @ self.W).abs().max())
        raise ValueError(
            f"every target code is zero, so there is nothing for LISTA to learn: lam = "
            f"{self.lam:g}, and the largest lam with a non-zero code is max|Wᵀy| = "
            f"{lam_max:.4g} on these signals; choose lam below it"
        )

    # ----------------------------------------------------------------- helpers
    def _check_signals(self, Y: Any) -> tuple[torch.Tensor, bool]:
        Y_t, numpy_out = self.check_input(Y, "Y", ndim=2, signals=True)
        DenseDictionary(self.W, check_input=False).check_signal(Y_t)
        return Y_t, numpy_out

    def extra_repr(self) -> str:
        return (f"n_features={self.n_features}, n_atoms={self.n_atoms}, lam={self.lam}, "
                f"n_steps={self.n_steps}, variant={self.variant!r}, tied={self.tied}"
                + (f", support={self.support}" if self.support else "")
                + (", per_step_input=True" if self.per_step_input else ""))


class _EpochStats(EpochRecord):
    """Running relative code error over one epoch, published to the history as it goes."""

    def __init__(self, history: list, epoch: int) -> None:
        super().__init__(history, epoch)
        self.err = self.ref = 0.0
        self.lr = float("nan")
        self.val_code_error: float | None = None

    @property
    def code_error(self) -> float:
        return self.err / self.ref if self.ref > 0 else float("nan")

    def add(self, err: torch.Tensor, ref: torch.Tensor, lr: float) -> None:
        self.err += float(err)
        self.ref += float(ref)
        self.lr = lr
        self.publish(partial=True)

    def values(self) -> dict[str, Any]:
        values = {"code_error": self.code_error, "sum_error": self.err,
                  "sum_target": self.ref, "lr": self.lr}
        if self.val_code_error is not None:
            values["val_code_error"] = self.val_code_error
        return values

    def restore(self, entry: dict[str, Any]) -> None:
        self.err, self.ref = entry["sum_error"], entry["sum_target"]


__all__ = ["LISTA", "LISTAConfig", "VARIANTS", "STEP_RULES", "ista_step", "unroll"]
