"""LISTA against FISTA on held-out MNIST digits, depth by depth: ``results/LISTA.md``.

Runs ``latentebm lista`` twice on the same dictionary (256 atoms, λ = 0.5) and merges the
tables: the hybrid variant on the training digits and their one-pixel shifts, and the classic
variants (untied, tied, LISTA-CP, step-only) on the training digits alone. Every network is
grown from the trained shallower one and trained with a 5000-digit validation split; the
weights of the best validation epoch are kept. One thread per process (PyTorch's intra-op
pool on a shared 2-core machine oversubscribes badly).

Usage (from the repository root, about 35 min for both on 2 idle cores)::

    .venv/bin/python benchmarks/lista_depth.py --data-dir /work/shared/data/mnist
    .venv/bin/python benchmarks/lista_depth.py --merge-only   # tables of finished runs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
STEPS = ["1", "2", "3", "5", "10", "16"]
RUNS = {
    "hybrid": ["--variants", "hybrid", "--steps", *STEPS,
               "--epochs-per-step", "3", "3", "40", "5", "5", "5", "--shift-augment"],
    "variants": ["--variants", "lista", "tied", "cp", "step", "--steps", *STEPS,
                 "--epochs", "12"],
}
TARGETS = {3: 50, 10: 100, 16: 150}


def command(name: str, args: argparse.Namespace) -> list[str]:
    """The ``latentebm`` arguments of run ``name`` (the first run learns the dictionary).

    Parameters
    ----------
    name : str
        A key of :data:`RUNS`.
    args : argparse.Namespace
        This script's arguments (``runs``, ``data_dir``).

    Returns
    -------
    list of str
    """
    out = Path(args.runs) / f"lista-{name}"
    argv = ["lista", "--out", str(out), "--data-dir", args.data_dir, *RUNS[name]]
    if name != "hybrid":
        argv += ["--dictionary", str(Path(args.runs) / "lista-hybrid" / "dictionary.safetensors")]
    return argv


def rows_of(folder: Path) -> list[dict]:
    """The ``table.json`` rows of a finished run.

    Parameters
    ----------
    folder : pathlib.Path
        The run's ``--out``.

    Returns
    -------
    list of dict
    """
    return json.loads((folder / "table.json").read_text())["rows"]


def report(args: argparse.Namespace, load: dict[str, list[float]]) -> str:
    """``LISTA.md``: both runs' rows, the depth targets and how to reproduce.

    Parameters
    ----------
    args : argparse.Namespace
        This script's arguments.
    load : dict of str to list of float
        The 1-minute load average before and after each run (empty with ``--merge-only``).

    Returns
    -------
    str
    """
    lines = ["# LISTA: held-out code error and speed against FISTA, by depth", ""]
    lines += ["MNIST, 256-atom dictionary learned by `latentebm lista` (λ = 0.5, energy "
              "½‖y − Wz‖² + λ‖z‖₁), 2000 test digits; targets z* by FISTA to a relative "
              "duality gap of 1e-5 (float32). 'FISTA its' is the number of FISTA iterations "
              "from zero (fixed step 1/L, no restart) that reach the same code error "
              "Σ‖z − z*‖² / Σ‖z*‖²; codes/s are for 1000 digits, one thread, FISTA run for "
              "that many iterations on the same digits. 'library FISTA its': the same count for "
              "the library's own FISTA (adaptive restart and support polish, checked on a "
              "grid of iteration counts), a much stronger baseline.", ""]
    if args.note:
        lines += [Path(args.note).read_text().strip(), ""]
    head = ("| variant | K | training data | epochs | code error | FISTA its | target "
            "| library FISTA its | LISTA codes/s | FISTA codes/s | speed-up |")
    lines += [head, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in RUNS:
        folder = Path(args.runs) / f"lista-{name}"
        if not (folder / "table.json").exists():
            continue
        data = "digits + 4 shifts" if name == "hybrid" else "digits"
        for r in rows_of(folder):
            its = r["fista_iterations"]
            target = TARGETS.get(r["K"])
            verdict = "" if target is None else (
                f"≥ {target} {'met' if its is None or its >= target else 'missed'}")
            lib = r["fista_library_iterations"]
            lines.append(
                f"| {r['label']} | {r['K']} | {data} | {r['epochs_run']} | "
                f"{r['code_error']:.3g} | {'> limit' if its is None else its} | {verdict} | "
                f"{'> limit' if lib is None else lib} | "
                f"{r['lista_codes_per_s']:.3g} | {r['fista_codes_per_s']:.3g} | "
                f"{r['speedup']:.1f}× |")
    lines += ["", "## Reproduce", "", "```"]
    lines += [".venv/bin/python benchmarks/lista_depth.py --data-dir /work/shared/data/mnist"]
    lines += ["# which runs, with OMP_NUM_THREADS=1:"]
    lines += ["latentebm " + " ".join(command(name, args)) for name in RUNS]
    lines += ["```", ""]
    if load:
        lines += ["Load average (1 min) before/after each run: " + "; ".join(
            f"{k} {v[0]:.1f}/{v[1]:.1f}" for k, v in load.items()), ""]
    lines += ["Full tables (energy excess, ISTA its, the library's restarted FISTA, warm "
              "starts) are each run's `table.md`; the figure is its `error_vs_iterations.png`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run both commands (unless ``--merge-only``) and write ``results/LISTA.md``.

    Parameters
    ----------
    argv : list of str or None
        Command-line arguments.

    Returns
    -------
    int
        Exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir",
                        default=os.path.join(os.environ.get("LATENTEBM_DATA", "../shared/data"),
                                             "mnist"),
                        help="folder with the MNIST IDX .gz files (default: "
                             "$LATENTEBM_DATA/mnist, else ../shared/data/mnist)")
    parser.add_argument("--runs", default=str(RESULTS / "raw"),
                        help="where the two run folders go (default: results/raw)")
    parser.add_argument("--merge-only", action="store_true",
                        help="only write LISTA.md from finished runs")
    parser.add_argument("--note", default=None,
                        help="a Markdown file whose text goes under the table's legend (how "
                             "and under what load the runs were made)")
    args = parser.parse_args(argv)
    os.environ.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    import torch

    from latentebm.cli import main as latentebm_main

    torch.set_num_threads(1)
    load: dict[str, list[float]] = {}
    if not args.merge_only:
        for name in RUNS:
            before = os.getloadavg()[0]
            status = latentebm_main(command(name, args) + ["--resume", "--quiet"])
            load[name] = [before, os.getloadavg()[0]]
            if status:
                return status
    text = report(args, load)
    (RESULTS / "LISTA.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
