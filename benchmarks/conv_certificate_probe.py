"""Why B3's self-certified stop costs ~6× the oracle stop: a probe of two support finishes.

On B3's problem (``b3_conv_sparse_coding.py``: kodim23, 32 filters 8x8, λ = 0.05, circular),
ADMM stopped after ``n`` iterations (true relative error ≈ 1e-4 at n = 100) is compared with its
optimum (ADMM to 600 iterations) and two ways of building a better dual point are tried:

- **restricted CG**: conjugate gradients on ``P_S KᵀK P_S z = P_S(Kᵀy − λ·sign z)`` on ADMM's
  support ``S`` and signs (one Gram product per step), the dual point from its residual;
- **violator repair**: coordinate steps on every coordinate whose correlation exceeds λ
  (``soft(z + c, λ)``: the filters have unit norm; one decode and one adjoint per round), which
  makes the residual nearly dual-feasible.

For each it prints the relative gap ``(P(z_ADMM) − D(θ)) / P`` the dual point certifies, with
the true error of ADMM's iterate beside it. ``python benchmarks/conv_certificate_probe.py``
(about two minutes on 2 threads). Findings are in ``results/conv_certificate_probe.md``.
"""

from __future__ import annotations

import time

import torch
from b3_conv_sparse_coding import LAM, circular_energy, fixed_filters, load_image, tikhonov_highpass


def main() -> None:
    import latentebm as le

    torch.set_num_threads(2)
    kernels = fixed_filters(2)
    signal = tikhonov_highpass(load_image("kodim23.png"))
    Y = torch.from_numpy(signal)[None, None]
    op = le.ConvDictionary(torch.from_numpy(kernels)[:, None], boundary="circular")

    def energy(z: torch.Tensor) -> float:
        return circular_energy(kernels, signal, z[0].numpy(), LAM)

    def dual(r: torch.Tensor) -> float:
        """``D(θ)`` at ``θ = s·r``, ``s`` the largest scale within ``‖Kᵀθ‖∞ ≤ λ``."""
        scale = LAM / max(LAM, float(op.adjoint(r).abs().max()))
        return float(scale * (Y * r).sum() - 0.5 * scale * scale * (r * r).sum())

    reference = le.solve(Y, op, LAM, method="admm", max_iter=600, tol=1e-12).z
    best = energy(reference)
    print(f"E* = {best:.9f}; optimal support {int((reference != 0).sum())} of {reference.numel()}")
    for n in (80, 100, 120):
        z = le.solve(Y, op, LAM, method="admm", max_iter=n, tol=0).z
        primal = energy(z)
        wrong = int(((reference != 0) != (z != 0)).sum())
        plain = (primal - dual(Y - op.decode(z))) / primal
        print(f"\nADMM {n} iterations: true error {(primal - best) / best:.1e}, support differs "
              f"from the optimum in {wrong} places, gap/E from its residual {plain:.1e}")
        signs = torch.sign(z)
        mask = (signs != 0).double()
        rhs = mask * (op.adjoint(Y) - LAM * signs)
        x = z.clone()
        res = rhs - mask * op.gram(x)
        direction, rr = res.clone(), float((res * res).sum())
        start = time.perf_counter()
        for step in range(1, 81):
            image = mask * op.gram(direction)
            alpha = rr / float((direction * image).sum())
            x += alpha * direction
            res -= alpha * image
            rr, previous = float((res * res).sum()), rr
            direction = res + (rr / previous) * direction
            if step in (10, 20, 40, 80):
                flipped = int(((torch.sign(x) != signs) & (signs != 0)).sum())
                gap = (primal - dual(Y - op.decode(x))) / primal
                print(f"  restricted CG {step:2d} steps ({time.perf_counter() - start:.2f} s): "
                      f"relative residual {rr ** 0.5 / float(rhs.norm()):.1e}, gap/E {gap:.1e}, "
                      f"{flipped} signs flipped")
        repaired = z.clone()
        for rounds in range(1, 5):
            c = op.adjoint(Y - op.decode(repaired))
            violating = c.abs() > LAM * (1 + 1e-6)
            moved = torch.sign(repaired + c) * ((repaired + c).abs() - LAM).clamp_min(0)
            repaired = torch.where(violating, moved, repaired)
            r = Y - op.decode(repaired)
            excess = float(op.adjoint(r).abs().max()) / LAM - 1
            print(f"  violator repair, {rounds} round(s): max |Kᵀr|/λ − 1 = {excess:.1e}, "
                  f"gap/E {(primal - dual(r)) / primal:.1e}")


if __name__ == "__main__":
    main()
