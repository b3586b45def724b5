"""``latentebm lista``: LISTA variants against ISTA and FISTA on held-out data.

As in Gregor & LeCun (2010), the networks are compared with the solvers they imitate.

Learns (or loads) a dictionary, computes the optimal codes once, trains one network per depth K
and variant (deeper ones grown from the trained shallower one), then measures on held-out data
the relative code error, the energy excess, the ISTA/FISTA iterations needed to do as well,
codes per second, and the iterations saved by warm-starting FISTA from the network's codes.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .. import viz
from .._io import atomic_path
from ..models import SparseCoding
from ..models.lista import LISTA
from ..solvers import fista
from ..training import distributed
from ..training.checkpoint import read_checkpoint, write_checkpoint
from . import lista_eval as ev
from ._args import (
    add_common_arguments,
    add_defaulted_flags,
    command_arguments,
    count_argument,
    fraction_argument,
    non_negative_argument,
    non_negative_int_argument,
    positive_argument,
)
from ._run import Run
from .claims import lecture_verdicts
from .mnist_problems import add_dataset_arguments, open_run

NAME = "lista"
HELP = ("LISTA (untied, tied, CP, step-only, hybrid) against ISTA and FISTA: error, "
        "iterations, speed")

#: command-line name -> (LISTA variant, tied, label)
VARIANTS: dict[str, tuple[str, bool, str]] = {
    "lista": ("lista", False, "LISTA (untied)"),
    "tied": ("lista", True, "LISTA (tied)"),
    "cp": ("cp", False, "LISTA-CP"),
    "step": ("step", False, "step-only (ALISTA-like)"),
    "hybrid": ("hybrid", False, "LISTA head + learned steps"),
}
DEFAULT_LR = {"cp": 1e-3}
LIBRARY_FISTA_GRID = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100, 120,
                      150, 200, 250, 300, 400, 500)


def _add_flags(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, epochs=12, lam=0.5)
    add_dataset_arguments(parser, n_train=60000, n_test=2000)
    parser.add_argument("--dict-epochs", type=count_argument, default=1,
                        help="epochs of dictionary learning when no --dictionary (default: 1)")
    parser.add_argument("--steps", type=count_argument, nargs="+", default=[1, 2, 3, 5, 10, 16],
                        help="depths K to train (default: 1 2 3 5 10 16)")
    parser.add_argument("--epochs-per-step", type=count_argument, nargs="+", default=None,
                        help="epochs for each depth in --steps, in the same order (default: "
                             "--epochs for every depth)")
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS),
                        help="which networks (default: all)")
    parser.add_argument("--batch-size", type=count_argument, default=256,
                        help="mini-batch (default: 256)")
    parser.add_argument("--lr", type=positive_argument, default=None,
                        help="Adam step (default: 1e-3 for cp, 3e-3 for the others)")
    parser.add_argument("--no-grow", action="store_true",
                        help="train every depth from the ISTA initialisation instead of growing "
                             "it from the trained shallower network")
    parser.add_argument("--support", type=fraction_argument, default=0.0,
                        help="support selection: at step k the min(k·p, 5p) largest entries of "
                             "each code bypass the threshold (LISTA-CPSS; default: 0, off)")
    parser.add_argument("--head", type=count_argument, default=3,
                        help="hybrid variant: how many leading layers are classic LISTA; the "
                             "later ones take learned shares of conjugate-gradient and "
                             "proximal steps, and deeper networks train them alone, the "
                             "trained head kept (default: 3)")
    parser.add_argument("--shared-input", action="store_true",
                        help="hybrid variant: one input matrix W_e shared by the classic head's "
                             "layers, as in Gregor & LeCun, instead of one per layer (default: "
                             "one per layer)")
    parser.add_argument("--validation", type=non_negative_int_argument, default=None,
                        help="training signals held out for early stopping; the networks are "
                             "trained on the rest (default: one twelfth, 5000 of MNIST's "
                             "60 000; 0: none)")
    parser.add_argument("--shift-augment", action="store_true",
                        help="MNIST: also train on the training digits shifted by one pixel up, "
                             "down, left and right (5x the data, their optimal codes computed "
                             "once and cached; the validation digits are not shifted)")
    parser.add_argument("--patience", type=count_argument, default=None,
                        help="stop a network after this many epochs without a better "
                             "validation error (default: run every epoch, keep the best)")
    parser.add_argument("--layer-weight", type=non_negative_argument, default=0.0,
                        help="weight of the earlier layers' mean code error in the loss "
                             "(deep supervision; default: 0)")
    parser.add_argument("--no-project", action="store_true",
                        help="let the input weights leave the range of the dictionary "
                             "(the library's training keeps them in it)")
    add_defaulted_flags(parser, count_argument, [
        ("--fista-iters", 2000, "FISTA iterations traced for the comparison"),
        ("--ista-iters", 5000, "ISTA iterations traced for the comparison"),
        ("--speed-samples", 1000, "held-out signals timed for codes per second"),
        ("--warm-samples", 500, "held-out signals for the warm-start report"),
    ])
    parser.add_argument("--warm-tol", type=positive_argument, default=1e-4,
                        help="relative duality gap for the warm-start report (default: 1e-4)")


add_arguments = command_arguments(NAME, _add_flags)


def learning_rate(args: argparse.Namespace, variant: str) -> float:
    """The Adam step of ``variant``: ``--lr``, else the variant's default (:data:`DEFAULT_LR`,
    3e-3 for the others).

    Parameters
    ----------
    args : argparse.Namespace
        The command's arguments; reads ``lr``.
    variant : str
        A name from :data:`VARIANTS`.

    Returns
    -------
    float
    """
    return args.lr if args.lr is not None else DEFAULT_LR.get(variant, 3e-3)


def dictionary_for(args: argparse.Namespace, run: Run, Y: torch.Tensor) -> SparseCoding:
    """The ``--dictionary`` checkpoint, or a dictionary learned on (at most 20000 of) ``Y``.

    Parameters
    ----------
    args : argparse.Namespace
        The command's arguments; reads ``dictionary``, ``atoms``, ``lam``, ``seed``,
        ``dict_epochs``, ``resume`` and ``quiet``.
    run : Run
        The run folder (the dictionary's checkpoint goes there).
    Y : torch.Tensor of shape (n_train, n_features)
        Training signals.

    Returns
    -------
    SparseCoding
        The loaded or learned model.
    """
    if args.dictionary:
        sc = SparseCoding.load(args.dictionary, device=Y.device)
        if sc.n_features != Y.shape[1] or sc.n_atoms != args.atoms:
            raise ValueError(
                f"--dictionary holds {sc.n_atoms} atoms of {sc.n_features} features; the run "
                f"needs {args.atoms} atoms (--atoms) of {Y.shape[1]}"
            )
        return sc
    sc = SparseCoding(Y.shape[1], args.atoms, args.lam, seed=args.seed, device=Y.device)
    sc.fit(Y[:20000], epochs=args.dict_epochs, checkpoint=run.path("dictionary.safetensors"),
           resume=args.resume, progress=not args.quiet)
    return sc


def optimal_codes(args, run: Run, Y: torch.Tensor, Yt: torch.Tensor, W: torch.Tensor):
    """FISTA's codes of the training and held-out signals, cached in the run folder.

    Parameters
    ----------
    args : argparse.Namespace
        The command's arguments; reads ``lam`` and ``resume``.
    run : Run
        The run folder (``targets.safetensors`` is cached there).
    Y : torch.Tensor of shape (n_train, n_features)
        Training signals.
    Yt : torch.Tensor of shape (n_test, n_features)
        Held-out signals.
    W : torch.Tensor of shape (n_features, n_atoms)
        Dictionary.

    Returns
    -------
    Z : torch.Tensor of shape (n_train, n_atoms)
        Optimal training codes.
    Zt : torch.Tensor of shape (n_test, n_atoms)
        Optimal held-out codes.
    gap_max : float
        Largest relative duality gap (gap / energy) among them.
    """
    path = run.path("targets.safetensors")
    if args.resume and path.exists():
        tensors = read_checkpoint(path, kind="lista_targets").state_dict
        Z, Zt = tensors["train"].to(Y), tensors["test"].to(Y)
        if Z.shape == (Y.shape[0], W.shape[1]) and Zt.shape == (Yt.shape[0], W.shape[1]):
            return Z, Zt, tensors["gap_max"].item()
    start = time.perf_counter()
    out, out_t = (fista(X, W, args.lam, max_iter=5000) for X in (Y, Yt))
    gap_max = float(torch.cat([out.gap / out.energy, out_t.gap / out_t.energy]).max())
    if distributed.is_main():  # every rank computes the same codes; rank 0 caches them
        write_checkpoint(path, kind="lista_targets",
                         config={"seconds": time.perf_counter() - start},
                         state_dict={"train": out.z, "test": out_t.z,
                                     "gap_max": torch.tensor(gap_max)})
    return out.z, out_t.z, gap_max


def shifted_copies(Y: torch.Tensor, image_shape: tuple[int, int]) -> torch.Tensor:
    """The images ``Y`` shifted by one pixel down, up, right and left (zeros enter).

    Parameters
    ----------
    Y : torch.Tensor of shape (n, h * w)
        Images as rows.
    image_shape : tuple of (int, int)
        ``(h, w)``.

    Returns
    -------
    torch.Tensor of shape (4 * n, h * w)
        The four shifted copies, one after the other.
    """
    images = Y.reshape(-1, *image_shape)
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))
    h, w = image_shape
    crops = [padded[:, :h, 1:w + 1], padded[:, 2:, 1:w + 1],
             padded[:, 1:h + 1, :w], padded[:, 1:h + 1, 2:]]
    return torch.cat([c.reshape(Y.shape[0], -1) for c in crops])


def shifted_training_set(args, run: Run, Y: torch.Tensor, Z: torch.Tensor, W: torch.Tensor,
                         image_shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``Y`` and its four one-pixel shifts, with their optimal codes (cached in the run folder).

    Parameters
    ----------
    args : argparse.Namespace
        The command's arguments; reads ``lam`` and ``resume``.
    run : Run
        The run folder (``shifted_targets.safetensors`` is cached there).
    Y : torch.Tensor of shape (n, n_features)
        Training images as rows.
    Z : torch.Tensor of shape (n, n_atoms)
        Their optimal codes.
    W : torch.Tensor of shape (n_features, n_atoms)
        Dictionary.
    image_shape : tuple of (int, int)
        Shape of one image.

    Returns
    -------
    Y5 : torch.Tensor of shape (5 * n, n_features)
    Z5 : torch.Tensor of shape (5 * n, n_atoms)
    """
    shifted = shifted_copies(Y, image_shape)
    path = run.path("shifted_targets.safetensors")
    codes = None
    if args.resume and path.exists():
        codes = read_checkpoint(path, kind="lista_targets").state_dict["shifted"].to(Y)
        if codes.shape != (shifted.shape[0], W.shape[1]):
            codes = None
    if codes is None:
        codes = fista(shifted, W, args.lam, max_iter=5000).z
        if distributed.is_main():
            write_checkpoint(path, kind="lista_targets", config={},
                             state_dict={"shifted": codes})
    return torch.cat([Y, shifted]), torch.cat([Z, codes])


def split_training_set(args, run: Run, Y: torch.Tensor, Z: torch.Tensor, W: torch.Tensor,
                       image_shape: tuple[int, int]) -> dict[str, Any]:
    """The networks' training data and validation pair from the training signals.

    Parameters
    ----------
    args : argparse.Namespace
        The command's arguments; reads ``validation``, ``shift_augment``, ``dataset``, ``lam``
        and ``resume``.
    run : Run
        The run folder.
    Y : torch.Tensor of shape (n_train, n_features)
        Training signals; the last ``--validation`` are held out.
    Z : torch.Tensor of shape (n_train, n_atoms)
        Their optimal codes.
    W : torch.Tensor of shape (n_features, n_atoms)
        Dictionary.
    image_shape : tuple of (int, int)
        Shape of one signal as an image.

    Returns
    -------
    dict
        Keyword arguments ``Y``, ``targets`` and (unless ``--validation 0``) ``validation``
        of :meth:`LISTA.fit`.
    """
    n = Y.shape[0]
    n_val = n // 12 if args.validation is None else args.validation
    if not 0 <= n_val < n:
        raise ValueError(f"--validation must be in [0, {n}), got {n_val}")
    fit_Y, fit_Z = Y[: n - n_val], Z[: n - n_val]
    if args.shift_augment:
        fit_Y, fit_Z = shifted_training_set(args, run, fit_Y, fit_Z, W, image_shape)
    data: dict[str, Any] = {"Y": fit_Y, "targets": fit_Z}
    if n_val:
        data["validation"] = (Y[n - n_val:], Z[n - n_val:])
    return data


def epochs_per_depth(args: argparse.Namespace) -> dict[int, int]:
    """The training epochs of each depth K in ``--steps``.

    Parameters
    ----------
    args : argparse.Namespace
        The command's arguments; reads ``steps``, ``epochs`` and ``epochs_per_step``.

    Returns
    -------
    dict of int to int
        K to epochs.
    """
    if args.epochs_per_step is None:
        return {K: args.epochs for K in args.steps}
    if len(args.epochs_per_step) != len(args.steps):
        raise ValueError("--epochs-per-step needs one count per depth in --steps, got "
                         f"{args.epochs_per_step} for {args.steps}")
    by_depth: dict[int, int] = {}
    for K, n in zip(args.steps, args.epochs_per_step, strict=True):
        if by_depth.setdefault(K, n) != n:
            raise ValueError(f"--steps repeats {K} with different --epochs-per-step")
    return by_depth


def train_networks(args, run: Run, W, data: dict[str, Any]) -> dict[tuple[str, int], LISTA]:
    """One trained network per (variant, K); deeper ones grown from the shallower one.

    Parameters
    ----------
    args : argparse.Namespace
        The command's arguments; reads ``steps``, ``variants``, ``lam``, ``seed``,
        ``support``, ``head``, ``shared_input``, ``patience``, ``layer_weight``, ``no_grow``,
        ``lr``,
        ``epochs``, ``epochs_per_step``, ``batch_size``, ``no_project``, ``resume`` and
        ``quiet``.
    run : Run
        The run folder (one checkpoint per network).
    W : torch.Tensor of shape (n_features, n_atoms)
        Dictionary.
    data : dict
        Training signals, targets and validation pair (:func:`split_training_set`).

    Returns
    -------
    dict of (str, int) to LISTA
        The trained networks keyed by (variant name, K).
    """
    steps = sorted(set(args.steps))
    epochs = epochs_per_depth(args)
    models: dict[tuple[str, int], LISTA] = {}
    for name in args.variants:
        variant, tied, _ = VARIANTS[name]
        previous = None
        for K in steps:
            if previous is None or args.no_grow:
                model = LISTA(W, args.lam, K, variant=variant, tied=tied, seed=args.seed,
                              support=args.support, head=args.head,
                              per_step_input=variant == "hybrid" and not args.shared_input)
            else:
                model = previous.grow(K)
            lr = learning_rate(args, name)
            # the hybrid grows layer-wise: a trained head stays as it is
            head_done = (variant == "hybrid" and previous is not None and not args.no_grow
                         and previous.n_steps >= args.head)
            model.fit(**data, epochs=epochs[K], batch_size=args.batch_size, lr=lr,
                      project_input=not args.no_project, patience=args.patience,
                      layer_weight=args.layer_weight, train_head=not head_done,
                      checkpoint=run.path(f"lista_{name}_K{K}.safetensors"),
                      resume=args.resume, progress=not args.quiet)
            models[(name, K)] = model
            previous = model
    return models


def _synced(fn, device: torch.device):
    def call():
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out
    return call


def evaluate(args, W, Yt, Zt, models) -> dict[str, Any]:
    """The table rows and the curves behind the error-against-iterations figure.

    Parameters
    ----------
    args : argparse.Namespace
        The command's arguments; reads ``lam``, ``fista_iters``, ``ista_iters``,
        ``speed_samples``, ``warm_samples`` and ``warm_tol``.
    W : torch.Tensor of shape (n_features, n_atoms)
        Dictionary.
    Yt : torch.Tensor of shape (n_test, n_features)
        Held-out signals.
    Zt : torch.Tensor of shape (n_test, n_atoms)
        Their optimal codes.
    models : dict of (str, int) to LISTA
        Output of :func:`train_networks` (set to eval mode here).

    Returns
    -------
    dict
        ``rows`` (one dict per network), ``traces`` (``"FISTA"`` and ``"ISTA"``: ndarray of
        shape (fista_iters,) and (ista_iters,)) and ``library_fista`` (``iterations`` and
        ``code_error``).
    """
    lam, device = args.lam, Yt.device
    E_star = ev.energies(Yt, W, Zt, lam)
    traces = {
        "FISTA": ev.solver_trace(Yt, W, lam, Zt, args.fista_iters, accelerated=True),
        "ISTA": ev.solver_trace(Yt, W, lam, Zt, args.ista_iters, accelerated=False),
    }
    grid = [k for k in LIBRARY_FISTA_GRID if k <= args.fista_iters]
    library = ev.library_fista_trace(Yt, W, lam, Zt, grid)
    Ysp = Yt[: args.speed_samples]
    Ywarm = Yt[: args.warm_samples]
    n_cold, cold_ok = ev.iterations_to_gap(Ywarm, W, lam, tol=args.warm_tol)
    fista_speed: dict[int, float] = {}
    rows = []
    for (name, K), model in models.items():
        model.eval()
        Z = model.encode(Yt).z
        err = ev.relative_code_error(Z, Zt)
        excess = ev.relative_energy_excess(ev.energies(Yt, W, Z, lam), E_star)
        n_fista = ev.iterations_to_reach(traces["FISTA"], err)
        n_ista = ev.iterations_to_reach(traces["ISTA"], err)
        n_lib = ev.iterations_to_reach(library, err, grid)
        cps = ev.codes_per_second(_synced(lambda m=model: m.encode(Ysp).z, device), Ysp.shape[0])
        n_timed = n_fista or args.fista_iters
        if n_timed not in fista_speed:
            fista_speed[n_timed] = ev.codes_per_second(
                _synced(lambda n=n_timed: ev.fista_fixed(Ysp, W, lam, n, plain=True), device),
                Ysp.shape[0], repeats=2)
        n_warm, warm_ok = ev.iterations_to_gap(Ywarm, W, lam, tol=args.warm_tol,
                                               z0=model.encode(Ywarm).z)
        warm = ev.warm_start_report(n_cold, n_warm)
        warm["all_converged"] = bool(cold_ok and warm_ok)
        rows.append({
            "variant": name, "label": VARIANTS[name][2], "K": K,
            "code_error": err, "energy_excess": excess,
            "fista_iterations": n_fista, "fista_library_iterations": n_lib,
            "ista_iterations": n_ista,
            "lista_codes_per_s": cps, "fista_codes_per_s": fista_speed[n_timed],
            "speedup": cps / fista_speed[n_timed],
            "speedup_is_lower_bound": n_fista is None,
            "warm_start": warm,
            "train_code_error": model.history_[-1]["code_error"] if model.history_ else None,
            "val_code_error": min((h["val_code_error"] for h in model.history_
                                   if "val_code_error" in h), default=None),
            "epochs_run": len(model.history_),
        })
    return {"rows": rows, "traces": traces, "library_fista": {"iterations": grid,
                                                              "code_error": library}}


def _count(n: int | None, limit: int) -> str:
    return f"> {limit}" if n is None else str(n)


def markdown_table(rows: list[dict[str, Any]], args) -> str:
    """The results as a Markdown table, with notes on what each column means.

    Parameters
    ----------
    rows : list of dict
        ``rows`` of :func:`evaluate`.
    args : argparse.Namespace
        The command's arguments; reads ``fista_iters``, ``ista_iters`` and ``warm_tol``.

    Returns
    -------
    str
        The table and notes.
    """
    head = ("| variant | K | code error | energy excess | FISTA its | FISTA its (restart+polish)"
            " | ISTA its | LISTA codes/s | FISTA codes/s (same error) | speed-up"
            " | warm start: FISTA its saved |")
    lines = [head, "|" + "---|" * 11]
    library_limit = max(k for k in LIBRARY_FISTA_GRID if k <= args.fista_iters)
    for r in rows:
        w = r["warm_start"]
        speed = f"{r['speedup']:.1f}×" + (" (≥)" if r["speedup_is_lower_bound"] else "")
        lines.append(
            f"| {r['label']} | {r['K']} | {r['code_error']:.3g} | {r['energy_excess']:.3g} | "
            f"{_count(r['fista_iterations'], args.fista_iters)} | "
            f"{_count(r['fista_library_iterations'], library_limit)} | "
            f"{_count(r['ista_iterations'], args.ista_iters)} | "
            f"{r['lista_codes_per_s']:.3g} | {r['fista_codes_per_s']:.3g} | {speed} | "
            f"{w['saved_mean']:.1f} of {w['cold_mean']:.1f} ({100 * w['saved_fraction']:.0f} %) |"
        )
    notes = (
        "\nCode error: Σ‖z̄ − z*‖² / Σ‖z*‖² on held-out data; energy excess: (ΣE(z̄) − ΣE(z*)) / "
        "ΣE(z*). FISTA/ISTA its: iterations from zero (Beck & Teboulle, no restart) to reach "
        "the same code error; 'restart+polish' is the library's default FISTA. FISTA codes/s: "
        "FISTA run for that many iterations on the same signals. Warm start: mean iterations of "
        f"the library's FISTA to a relative duality gap of {args.warm_tol:g}, from zero vs "
        "from the network's codes.\n"
    )
    return "\n".join(lines) + "\n" + notes


def error_figure(path, results, args, n_atoms: int) -> None:
    """Gregor & LeCun's plot: code error against iterations (solvers) or steps K (networks).

    Parameters
    ----------
    path : str or os.PathLike
        PNG file to write.
    results : dict
        Output of :func:`evaluate`.
    args : argparse.Namespace
        The command's arguments; reads ``variants``, ``dataset`` and ``lam``.
    n_atoms : int
        Dictionary size (for the title).
    """
    fig = Figure(figsize=(7.0, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name in ("ISTA", "FISTA"):
        t = results["traces"][name]
        ax.plot(np.arange(1, t.size + 1), t, linewidth=1.5, label=f"{name} (from zero)")
    lib = results["library_fista"]
    ax.plot(lib["iterations"], lib["code_error"], linewidth=1.2, linestyle="--",
            label="FISTA, restart + support polish")
    lowest = 1.0
    for name, marker in zip(args.variants, "osD^v*xP", strict=False):
        rows = [r for r in results["rows"] if r["variant"] == name]
        errs = [r["code_error"] for r in rows]
        lowest = min(lowest, *errs)
        ax.plot([r["K"] for r in rows], errs, marker=marker, linewidth=1, markersize=6,
                label=VARIANTS[name][2])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(max(lowest / 100, 1e-9), 1.5)
    ax.set_xlabel("iterations (ISTA, FISTA) or steps K (LISTA)")
    ax.set_ylabel("relative code error Σ‖z − z*‖² / Σ‖z*‖²")
    ax.set_title(f"{args.dataset}, {n_atoms} atoms, λ = {args.lam:g}, held-out")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png")


def figures(run: Run, args, results, models, W, image_shape) -> None:
    """The error figure, the training curves and the dictionary's atoms.

    Parameters
    ----------
    run : Run
        The run folder the PNG files go to.
    args : argparse.Namespace
        The command's arguments; reads ``steps``, ``variants``, ``dataset`` and ``lam``.
    results : dict
        Output of :func:`evaluate`.
    models : dict of (str, int) to LISTA
        The trained networks.
    W : torch.Tensor of shape (n_features, n_atoms)
        Dictionary.
    image_shape : tuple of (int, int)
        Shape of one signal as an image (``h * w == n_features``).
    """
    error_figure(run.path("error_vs_iterations.png"), results, args, W.shape[1])
    top = max(args.steps)
    training = {
        f"{VARIANTS[name][2]} K={K}": (
            np.array([h["epoch"] + 1 for h in m.history_]),
            np.array([h["code_error"] for h in m.history_]),
        )
        for (name, K), m in models.items()
        if (K == top or name == args.variants[0]) and m.history_
    }
    if training:
        viz.convergence_curves(training, run.path("training_curves.png"), xlabel="epoch",
                               ylabel="training code error", title="LISTA training")
    viz.atom_grid(W.T.cpu().numpy(), image_shape, run.path("dictionary.png"),
                  title="dictionary W")


def run(args: argparse.Namespace) -> Run:
    """Learn the dictionary and targets, train the networks, compare them with the solvers.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed flags of ``latentebm lista`` (:func:`add_arguments`), with those of
        :func:`~latentebm.experiments.mnist_problems.add_dataset_arguments` and the common
        ones.

    Returns
    -------
    Run
        The output folder, with ``table.md``, ``table.json``, ``metrics.json``, the
        checkpoints and the figures.
    """
    epochs_per_depth(args)
    if args.shift_augment and args.dataset != "mnist":
        raise ValueError("--shift-augment applies to --dataset mnist only")
    if args.validation is not None and args.validation >= args.n_train:
        raise ValueError(f"--validation must be below --n-train ({args.n_train}), got "
                         f"{args.validation}")
    out, Y, Yt, image_shape = open_run(
        args, lr={name: learning_rate(args, name) for name in args.variants})
    sc = dictionary_for(args, out, Y)
    W = sc.dictionary()
    Z, Zt, gap_max = optimal_codes(args, out, Y, Yt, W)
    models = train_networks(args, out, W, split_training_set(args, out, Y, Z, W, image_shape))
    if not distributed.is_main():  # under torchrun every rank trains; rank 0 reports
        return out
    results = evaluate(args, W, Yt, Zt, models)
    table = markdown_table(results["rows"], args)
    out.path("table.md").write_text(table)
    out.write_metrics({"rows": results["rows"]}, "table.json")
    figures(out, args, results, models, W, image_shape)
    written = out.write_metrics({
        "rows": results["rows"],
        "targets_max_relative_gap": gap_max,
        "fista_trace": results["traces"]["FISTA"],
        "ista_trace": results["traces"]["ISTA"],
        "library_fista": results["library_fista"],
        "dictionary_lam": sc.lam,
        "seconds": out.elapsed(),
    })
    print(table)
    print(lecture_verdicts(NAME, written))
    return out
