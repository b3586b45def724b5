"""Exact Lasso solutions on an identified support, for dense dictionaries (an active-set finish).

Once proximal gradient has roughly found a sample's support ``S`` and signs ``s``, the optimum
solves ``G_SS z_S = (Aᵀy)_S − λ s_S`` with ``G = AᵀA``. A few active-set rounds correct the
guess: atoms whose solved coefficient has the wrong sign leave ``S``; once the signs agree, atoms
outside ``S`` that violate the optimality condition ``|(Aᵀr)_j| ≤ λ`` enter it with the sign of
``(Aᵀr)_j``. When a round changes nothing, the candidate satisfies every optimality condition:
it is the solution, exact to rounding. (The rounds are a heuristic that can stall on very
coherent atoms.) A candidate replaces the iterate only where its certificate (the duality gap,
or the strong-convexity bound where the loop uses it) is smaller, so the finish can help but
never hurt. A sign pattern is tried once: until proximal gradient
changes it, the same rounds would give the same candidate.
"""

from __future__ import annotations

import torch

from .._docs import fill_doc
from ..operators import LinearOperator, batch_dot
from ..regularizers import Regularizer
from .strong_convexity import energy_and_certificate

MAX_SUPPORT = 64
"""Larger supports are left to proximal gradient: a factorisation costs ``O(k³)`` per sample."""
ROUNDS = 8
ATTEMPT_BELOW = 0.1
"""Tried only where the relative gap is already below this: before, the sign pattern is too far
off to pay for the factorisations."""


@fill_doc
def support_solve(
    op: LinearOperator,
    state,
    lam: float,
    reg: Regularizer,
    energy: torch.Tensor,
    gap: torch.Tensor,
    tol: float,
    mu: float = 0.0,
) -> torch.Tensor:
    """Run the active-set finish on the working samples of ``state`` whose sign pattern is new and
    whose gap is not yet small; updates ``state``, ``energy`` and ``gap`` in place where the
    candidate is better.

    Parameters
    ----------
    op : LinearOperator
        A dense operator (its :meth:`~LinearOperator.gram_matrix` is used).
    state : object
        The proximal-gradient loop's working set: codes ``z`` and extrapolated points ``x``
        ``(n, n_atoms)`` with their Gram products ``Gz``, ``Gx``, ``b = Aᵀy`` ``(n, n_atoms)``,
        ``yy = ‖y‖²`` and momentum ``t`` ``(n,)``, the signals ``Y``, and the sign patterns
        ``signs`` ``(n, n_atoms)`` and ``tried`` flags ``(n,)`` of the active-set bookkeeping.
    {lam_weight}
    reg : Regularizer
        An L1 penalty (``reg.nonneg`` selects the one-sided rounds).
    energy : torch.Tensor of shape (n,)
        Energies of the working samples, updated in place.
    gap : torch.Tensor of shape (n,)
        Their certificates (duality gaps, or the strong-convexity bound where smaller), updated
        in place.
    tol : float
        Relative gap below which a sample is left alone.
    mu : float
        The strong-convexity constant the loop certifies with
        (:func:`~.strong_convexity.lasso_strong_convexity`; 0: the duality gap alone), so a
        candidate is judged by the same certificate as the iterate it would replace.

    Returns
    -------
    torch.Tensor of shape (n_replaced,)
        The working rows whose iterate was replaced by its candidate.
    """
    signs = torch.sign(state.z).to(torch.int8)
    rows = new_sign_rows(signs, state.signs, state.tried, energy, gap, tol, atom_dim=1)
    state.signs = signs
    if rows.numel() == 0:
        return rows
    nonneg = reg.nonneg
    candidate, G_cand, ok = active_set_rounds(op.gram_matrix(), state.b[rows], signs[rows], lam,
                                              nonneg=nonneg)
    if not bool(ok.any()):
        return rows[ok]
    rows, candidate, G_cand = rows[ok], candidate[ok], G_cand[ok]
    if candidate.dtype == torch.float64:
        b = state.b[rows]
        rr = state.yy[rows] - 2 * batch_dot(b, candidate) + batch_dot(candidate, G_cand)
    else:
        r = state.Y[rows] - op.decode(candidate)
        rr = batch_dot(r, r)
    cand_energy, cand_gap = energy_and_certificate(rr.clamp_min(0), state.b[rows] - G_cand,
                                                   candidate, lam, reg, mu)
    better = cand_gap < gap[rows]
    rows = rows[better]
    state.z[rows] = candidate[better]
    state.Gz[rows] = G_cand[better]
    state.x[rows] = candidate[better]
    state.Gx[rows] = G_cand[better]
    state.t[rows] = 1
    energy[rows] = cand_energy[better]
    gap[rows] = cand_gap[better]
    return rows


def new_sign_rows(signs: torch.Tensor, previous: torch.Tensor, tried: torch.Tensor,
                  energy: torch.Tensor, gap: torch.Tensor, tol: float, *,
                  atom_dim: int) -> torch.Tensor:
    """The samples due an active-set finish, marked as tried.

    A sample is due when its sign pattern is new since its last attempt (``tried`` is cleared
    where it changed), its support holds 1 to :data:`MAX_SUPPORT` atoms and its gap lies
    between ``tol`` and :data:`ATTEMPT_BELOW` relative to its energy.

    Parameters
    ----------
    signs : torch.Tensor of int8, shape (n, n_atoms) or (n_atoms, n)
        The current sign patterns, atoms along ``atom_dim``.
    previous : torch.Tensor of int8, the shape of ``signs``
        The sign patterns of the last check.
    tried : torch.Tensor of bool, shape (n,)
        Whether the sample's pattern was already tried; updated in place.
    energy : torch.Tensor of shape (n,)
        The samples' energies.
    gap : torch.Tensor of shape (n,)
        Their duality gaps.
    tol : float
        Relative gap below which a sample is left alone.
    atom_dim : int
        The dimension of ``signs`` that indexes atoms.

    Returns
    -------
    torch.Tensor of shape (n_due,)
        Indices of the samples due a finish.
    """
    tried &= (signs == previous).all(atom_dim)
    size = (signs != 0).sum(atom_dim)
    eligible = ~tried & (size > 0) & (size <= MAX_SUPPORT) & (gap > tol * energy)
    eligible &= gap <= ATTEMPT_BELOW * energy
    rows = torch.nonzero(eligible).flatten()
    tried[rows] = True
    return rows


@fill_doc
def active_set_rounds(
    G: torch.Tensor,
    b: torch.Tensor,
    signs: torch.Tensor,
    lam: float,
    *,
    nonneg: bool = False,
    rounds: int = ROUNDS,
    max_support: int = MAX_SUPPORT,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Active-set rounds from sign guesses.

    Parameters
    ----------
    G : torch.Tensor of shape (n_atoms, n_atoms)
        Gram matrix ``AᵀA``.
    b : torch.Tensor of shape (batch, n_atoms)
        ``Aᵀy``.
    signs : torch.Tensor of shape (batch, n_atoms), int8
        Sign guesses (0 off the support); not modified.
    {lam_weight}
    nonneg : bool, default=False
        Only positive coefficients may enter the support.
    rounds : int, default=ROUNDS
        Maximal number of rounds.
    max_support : int, default=MAX_SUPPORT
        Samples whose support grows beyond this are dropped.

    Returns
    -------
    codes : torch.Tensor of shape (batch, n_atoms)
        The last sign-consistent codes of each sample (zeros where none).
    G_codes : torch.Tensor of shape (batch, n_atoms)
        Their Gram products ``G z``.
    found : torch.Tensor of shape (batch,), bool
        Where such codes exist.
    """
    batch = b.shape[0]
    best = torch.zeros_like(b)
    best_G = torch.zeros_like(b)
    found = torch.zeros(batch, dtype=torch.bool, device=b.device)
    active = torch.arange(batch, device=b.device)
    signs = signs.clone()
    threshold = lam * (1 + torch.finfo(b.dtype).eps ** 0.5)
    for _ in range(rounds):
        size = (signs[active] != 0).sum(1)
        keep = (size > 0) & (size <= max_support)
        active = active[keep]
        if active.numel() == 0:
            break
        codes, solved = _solve_on_support(G, b[active], signs[active], lam)
        s = signs[active]
        wrong = (torch.sign(codes) != s) & (s != 0)
        consistent = solved & ~wrong.any(1)
        G_codes = codes @ G
        c = b[active] - G_codes
        violating = (s == 0) & ((c > threshold) if nonneg else (c.abs() > threshold))
        rows = active[consistent]
        best[rows], best_G[rows], found[rows] = codes[consistent], G_codes[consistent], True
        settled = consistent & ~violating.any(1)
        new_signs = torch.where(wrong, torch.zeros_like(s), s)
        new_signs = torch.where(violating & consistent[:, None],
                                torch.sign(c).to(torch.int8), new_signs)
        signs[active] = new_signs
        active = active[solved & ~settled]
    return best, best_G, found


def _solve_on_support(
    G: torch.Tensor, b: torch.Tensor, signs: torch.Tensor, lam: float, chunk: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``G_SS z_S = b_S − λ s_S`` for a batch of supports by Cholesky factorisations.

    Samples are sorted by support size and solved in chunks padded (with identity rows) only to
    the largest support in the chunk. Returns the codes ``(batch, n_atoms)`` and where the
    factorisation succeeded with finite values."""
    size = (signs != 0).sum(1)
    codes = torch.zeros_like(b)
    ok = torch.zeros(b.shape[0], dtype=torch.bool, device=b.device)
    by_size = torch.argsort(size)
    for start in range(0, b.shape[0], chunk):
        rows = by_size[start:start + chunk]
        k = int(size[rows[-1]])
        order = torch.argsort(signs[rows].abs(), dim=1, descending=True, stable=True)[:, :k]
        valid = torch.arange(k, device=b.device) < size[rows, None]
        G_ss = torch.take(G, order[:, :, None] * G.shape[1] + order[:, None, :])
        G_ss.mul_(valid[:, :, None] & valid[:, None, :])
        G_ss.diagonal(dim1=1, dim2=2).add_(~valid)
        s = signs[rows].gather(1, order).to(b.dtype)
        rhs = (b[rows].gather(1, order) - lam * s).mul_(valid)
        factor, info = torch.linalg.cholesky_ex(G_ss)
        sol = torch.cholesky_solve(rhs.unsqueeze(-1), factor).squeeze(-1)
        ok[rows] = (info == 0) & torch.isfinite(sol).all(1)
        codes[rows] = codes.new_zeros(len(rows), b.shape[1]).scatter_(1, order, sol * valid)
    return codes, ok
