"""``latentebm reproduce``: every experiment of the lecture, one report.

Each experiment is one of the other commands, driven through its own parser (its flags for the
chosen budget, ``--out DIR/<experiment>``, the seed and the data), in its own sub-folder. After
each experiment the report (``DIR/index.html``, ``DIR/README.md``, ``DIR/claims.json``) is
rewritten atomically from the ``metrics.json`` files written so far. Run again with the same
``--out`` and it resumes: finished experiments are skipped, a partly done one continues from its
checkpoints (its command's ``--resume``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .._io import write_json
from .._validation import resolve_device
from ..data.mnist import DATA_ENV, mnist_cache_dir
from ..training import distributed
from ._args import command_arguments, default_photographs, device_argument, seed_argument
from ._run import Run, keep_configs, restore_configs
from .claims import claims_for
from .report import write_report

NAME = "reproduce"
HELP = ("run every lecture experiment (strokes, Gabors, ISTA/FISTA/LISTA, PSD, convolutional "
        "filters, colour, pretraining, VAE, fuzzy balls, conditional) and write one report")
#: ``tiny``: seconds per experiment on the bundled sample, for tests (its numbers mean nothing);
#: ``fast``: minutes in all on a laptop; ``full``: every command's own defaults, but LISTA runs
#: the README's headline recipe (one network, not all five variants) and pretraining 20 seeds.
BUDGETS = ("tiny", "fast", "full")
STATE_NAME = "reproduce.json"
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
INTERRUPTED = ("interrupted: run the same reproduce command again; finished experiments are "
               "kept and the one under way resumes from its checkpoints")


@dataclass(frozen=True)
class Experiment:
    """One lecture experiment: a command and its flags per budget.

    Parameters
    ----------
    key : str
        Sub-folder name, and the key of its claims in :mod:`.claims`.
    title : str
        Heading in the report.
    module : str
        The command's module in this package (one of ``COMMANDS``).
    data : str
        ``"mnist"`` (gets ``--data-dir`` or ``--sample``) or ``"images"`` (gets ``--images``
        when given).
    flags : tuple of str
        Flags for every budget.
    budgets : dict
        Budget name → extra flags; a budget not listed uses the command's defaults.
    notes : dict
        Budget name → what the budget could not make smaller (a flag the command lacks).
    """

    key: str
    title: str
    module: str
    data: str
    flags: tuple[str, ...] = ()
    budgets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def command_module(self) -> ModuleType:
        """The experiment's command module.

        Returns
        -------
        module
            ``latentebm.experiments.<module>``, imported.
        """
        return importlib.import_module(f"{__package__}.{self.module}")


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split())


PLAN: tuple[Experiment, ...] = (
    Experiment(
        "strokes", "Sparse coding on MNIST: strokes", "sparse_coding_cmd", "mnist",
        _split("--dataset mnist"),
        {"tiny": _split("--atoms 16 --n-train 200 --n-test 50 --epochs 1"),
         "fast": _split("--n-train 20000 --n-test 500 --epochs 3")},
    ),
    Experiment(
        "gabors", "Sparse coding on natural-image patches: Gabor-like edges",
        "sparse_coding_cmd", "images", _split("--dataset natural"),
        {"tiny": _split("--atoms 8 --patch 8 --n-train 500 --n-test 50 --epochs 1"),
         "fast": _split("--n-train 20000 --n-test 500 --epochs 2")},
    ),
    Experiment(
        "lista", "ISTA, FISTA and LISTA", "lista_cmd", "mnist", (),
        {"tiny": _split("--atoms 16 --n-train 200 --n-test 50 --steps 1 2 --variants lista "
                        "--epochs 1 --fista-iters 50 --ista-iters 100 --speed-samples 50 "
                        "--warm-samples 20"),
         "fast": _split("--n-train 4000 --n-test 500 --steps 1 2 5 --variants lista "
                        "--epochs 2 --fista-iters 300 --ista-iters 1000 --speed-samples 300 "
                        "--warm-samples 100"),
         "full": _split("--variants hybrid --steps 1 2 3 5 10 16 --epochs-per-step 3 3 40 5 5 5 "
                        "--shift-augment")},
        {"tiny": "the dictionary is learned for one epoch at least (--dict-epochs)",
         "full": "the README's headline recipe (the hybrid network, about 35 minutes on one "
                 "thread) instead of all five variants at 12 epochs each (hours)"},
    ),
    Experiment(
        "psd", "Predictive sparse decomposition (PSD)", "psd_cmd", "mnist", (),
        {"tiny": _split("--atoms 16 --n-train 200 --n-test 50 --epochs 1 --fista-iters 50 "
                        "--encoders tanh"),
         "fast": _split("--n-train 2000 --n-test 500 --epochs 2 --fista-iters 200")},
        {"tiny": "the warm-start report always uses up to 500 held-out signals (no flag)"},
    ),
    Experiment(
        "conv-filters", "Convolutional sparse auto-encoders: 1 to 64 filters",
        "conv_filters_cmd", "images", (),
        {"tiny": _split("--counts 1 4 --kernel 5 --tile 16 --n-tiles 8 --n-test 2 --epochs 1 "
                        "--fista-iter 3"),
         "fast": _split("--counts 1 2 4 8 --n-tiles 150 --n-test 20 --epochs 2")},
    ),
    Experiment(
        "conv-colour", "Convolutional sparse auto-encoder on colour photographs",
        "conv_colour_cmd", "images", (),
        {"tiny": _split("--filters 4 --kernel 5 --tile 16 --n-tiles 8 --n-test 2 --epochs 1 "
                        "--fista-iter 3 --show-size 24 --lam 5"),
         "fast": _split("--n-tiles 100 --n-test 20 --epochs 2 --show-size 96")},
    ),
    Experiment(
        "pretrain", "Unsupervised pretraining of a convnet's first layer", "pretrain_cmd",
        "mnist", (),
        {"tiny": _split("--labels-per-class 1 2 --seeds 1 --filters 2 --n-unlabelled 50 "
                        "--steps 3 --n-test 100 --epochs 1 --fista-iter 2"),
         "fast": _split("--labels-per-class 1 100 --seeds 3 --n-unlabelled 2000 --steps 150 "
                        "--n-test 2000 --epochs 1"),
         "full": _split("--seeds 20")},
        {"full": "20 paired seeds instead of the command's 5: with one label per class the "
                 "paired differences spread by about 2 points, so 5 seeds can only detect a "
                 "gain near 3 points and 20 one near 1.5"},
    ),
    Experiment(
        "vae", "Variational auto-encoder", "vae_cmd", "mnist", (),
        {"tiny": _split("--latent 2 --hidden 16 --epochs 1 --batch-size 500 --k 4 "
                        "--nll-images 20"),
         "fast": _split("--epochs 2 --k 100 --nll-images 300")},
        {"tiny": "every epoch runs over the whole training set (no --n-train)",
         "fast": "every epoch runs over the whole training set (no --n-train)"},
    ),
    Experiment(
        "fuzzy-balls", "VAE codes as fuzzy balls: the KL spring", "fuzzy_balls_cmd", "mnist",
        (),
        {"tiny": _split("--hidden 16 --epochs 1 --batch-size 500 --betas 0 1 --n-plot 20"),
         "fast": _split("--epochs 2 --betas 0 1 16 --n-plot 300")},
        {"tiny": "the fixed-σ comparison model is always trained (no flag to skip it)",
         "fast": "the fixed-σ comparison model is always trained (no flag to skip it)"},
    ),
    Experiment(
        "conditional", "The conditional latent-variable EBM: completing digits",
        "conditional_cmd", "mnist", (),
        {"tiny": _split("--atoms 32 --hidden 16 --n-train 100 --n-test 20 --epochs 1 "
                        "--candidates 4 --best-of 3"),
         "fast": _split("--n-train 5000 --n-test 200 --epochs 2")},
    ),
)


class _Parser(argparse.ArgumentParser):
    """A command's parser that raises instead of exiting, so a flag a command no longer has is
    one clear error before anything runs."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ValueError(f"{self.prog}: {message}")


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True,
                        help="report folder: one sub-folder per experiment, index.html and "
                        "README.md; run again with the same folder to resume")
    parser.add_argument("--budget", choices=BUDGETS, default="fast",
                        help="tiny: seconds on the bundled MNIST sample (tests; the numbers "
                        "mean nothing); fast: about 10 minutes on 2 CPU cores; full: every "
                        "command's defaults (LISTA: the README's hybrid recipe; pretraining: 20 "
                        "seeds), about an hour "
                        "on 2 CPU cores (default: fast)")
    parser.add_argument("--only", nargs="+", choices=[e.key for e in PLAN], default=None,
                        help="run only these experiments (default: all)")
    parser.add_argument("--seed", type=seed_argument, default=0,
                        help="random seed in [0, 2**32 - 1], passed to every experiment "
                        "(default: 0)")
    parser.add_argument("--data-dir", default=os.environ.get(DATA_ENV),
                        help="folder with the four MNIST IDX .gz files (default: "
                        "$LATENTEBM_DATA, then the cache; the bundled sample when none has "
                        "them; --budget tiny always uses the sample)")
    parser.add_argument("--images", default=None,
                        help="folder of photographs for the natural-image experiments, e.g. "
                        "Kodak24 (default: scikit-image's bundled photographs)")
    parser.add_argument("--device", type=device_argument, default="cpu",
                        help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars inside the experiments (the k-of-n lines stay)")


add_arguments = command_arguments(NAME, _add_flags)


def mnist_source(args: argparse.Namespace) -> tuple[tuple[str, ...], str]:
    """The MNIST flags for every MNIST command and the sentence the report prints about them.

    A ``--data-dir`` (or ``$LATENTEBM_DATA``) that lacks the files is an error; with neither,
    the cache is used when it holds them, else the bundled sample.

    Parameters
    ----------
    args : argparse.Namespace
        The reproduce arguments; reads ``budget`` and ``data_dir``.

    Returns
    -------
    flags : tuple of str
        ``("--sample",)``, ``("--data-dir", folder)`` or ``()`` (the cache).
    text : str
        The sentence for the report.
    """
    if args.budget == "tiny":
        return ("--sample",), "the bundled MNIST sample (--budget tiny)"
    if args.data_dir:
        folder = Path(args.data_dir).expanduser()
        missing = [n for n in MNIST_FILES if not (folder / n).is_file()]
        if missing:
            raise ValueError(f"--data-dir {folder} lacks the MNIST files {', '.join(missing)}")
        return ("--data-dir", str(folder)), f"full MNIST from {folder}"
    cache = mnist_cache_dir()
    if all((cache / n).is_file() for n in MNIST_FILES):
        return (), f"full MNIST from the cache {cache}"
    return ("--sample",), ("the bundled MNIST sample: no --data-dir, $LATENTEBM_DATA or cached "
                           "MNIST, so the MNIST numbers come from a few thousand digits")


def image_source(args: argparse.Namespace) -> tuple[tuple[str, ...], str]:
    """The ``--images`` flags and the sentence the report prints about the photographs.

    Parameters
    ----------
    args : argparse.Namespace
        The reproduce arguments; reads ``images``.

    Returns
    -------
    flags : tuple of str
        ``()`` or ``("--images", folder)``.
    text : str
        The sentence for the report.
    """
    if args.images is None:
        kodak = default_photographs()
        return (), "scikit-image's bundled photographs" + (
            "" if kodak is None else f"; conv-colour's colour photographs are its default, "
            f"{kodak}, found beside the working folder or the checkout (--images chooses)")
    folder = Path(args.images).expanduser()
    if not folder.is_dir():
        raise ValueError(f"--images {folder} is not a folder")
    return ("--images", str(folder)), f"the photographs in {folder}"


def experiment_argv(exp: Experiment, args: argparse.Namespace, data_flags: dict[str, tuple],
                    resume: bool) -> list[str]:
    """The command-line flags of ``exp`` for this reproduce run (without the command name).

    Parameters
    ----------
    exp : Experiment
        The experiment.
    args : argparse.Namespace
        The reproduce arguments; reads ``budget``, ``out``, ``seed``, ``device`` and
        ``quiet``.
    data_flags : dict of str to tuple of str
        Data flags per ``Experiment.data`` kind (``"mnist"``, ``"images"``).
    resume : bool
        Append ``--resume``.

    Returns
    -------
    list of str
        The flags.
    """
    argv = [*exp.flags, *exp.budgets.get(args.budget, ()), *data_flags[exp.data],
            "--out", str(Path(args.out) / exp.key), "--seed", str(args.seed),
            "--device", args.device]
    if args.quiet:
        argv.append("--quiet")
    if resume:
        argv.append("--resume")
    return argv


def parse_experiment(exp: Experiment, argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed by the experiment's own parser (``ValueError`` on a flag it lacks).

    Parameters
    ----------
    exp : Experiment
        The experiment.
    argv : list of str
        Its flags, as from :func:`experiment_argv`.

    Returns
    -------
    argparse.Namespace
        The parsed arguments, ready for the command's ``run``.
    """
    module = exp.command_module()
    parser = _Parser(prog=f"latentebm {module.NAME}")
    module.add_arguments(parser)
    return parser.parse_args(argv)


def command_line(prog: str, argv: list[str]) -> str:
    """``prog`` and ``argv`` as one shell-quoted line.

    Parameters
    ----------
    prog : str
        The subcommand's name.
    argv : list of str
        Its flags.

    Returns
    -------
    str
        ``latentebm <prog> <argv...>``, each word quoted for the shell where needed.
    """
    return " ".join(shlex.quote(a) for a in ["latentebm", prog, *argv])


def _reproduce_argv(args: argparse.Namespace) -> list[str]:
    argv = ["--out", str(args.out), "--budget", args.budget, "--seed", str(args.seed),
            "--device", args.device]
    if args.only:
        argv += ["--only", *args.only]
    if args.budget != "tiny" and args.data_dir:
        argv += ["--data-dir", str(args.data_dir)]
    if args.images:
        argv += ["--images", str(args.images)]
    if args.quiet:
        argv.append("--quiet")
    return argv


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _machine() -> dict[str, Any]:
    import torch

    from .. import __version__
    return {
        "version": __version__,
        "git": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
    }


def _git_commit() -> str | None:
    """The commit of the source tree this package runs from (``None`` outside a git checkout),
    with a mark when the package's own tracked files differ from it (not the rest of the
    checkout: a report rerun into a committed folder rewrites that folder's tracked files)."""
    here = str(Path(__file__).resolve().parent)
    try:
        head = subprocess.run(["git", "-C", here, "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        changed = subprocess.run(["git", "-C", here, "status", "--porcelain",
                                  "--untracked-files=no", "--", "."],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + (" with uncommitted source changes" if changed else "")


def _read_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is damaged ({exc}); delete it to run every experiment "
                         "again") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is damaged (not a JSON object); delete it to start again")
    return state


def is_finished(out: Path, key: str, state: dict[str, Any]) -> bool:
    """Whether an experiment finished in an earlier run: recorded as done and its
    ``metrics.json`` complete (it parses).

    Parameters
    ----------
    out : pathlib.Path
        The reproduce folder.
    key : str
        The experiment's key (its sub-folder).
    state : dict
        The reproduce state read from ``reproduce.json``.

    Returns
    -------
    bool
        True when the experiment can be skipped.
    """
    if state.get("experiments", {}).get(key, {}).get("status") != "done":
        return False
    try:
        json.loads((out / key / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return True


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def run(args: argparse.Namespace) -> Run:
    """Run every planned experiment not yet finished, rewriting the report after each.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed flags of ``latentebm reproduce`` (:func:`add_arguments`): ``out``,
        ``budget``, ``only``, ``seed``, ``data_dir``, ``images``, ``device`` and ``quiet``.

    Returns
    -------
    Run
        The reproduce folder, with ``reproduce.json``, the report files and one sub-folder per
        experiment. Raises ``ValueError`` at the end when any experiment failed.
    """
    resolve_device(args.device)  # an unusable device is refused before ten experiments fail
    mnist_flags, mnist_text = mnist_source(args)
    image_flags, image_text = image_source(args)
    data_flags = {"mnist": mnist_flags, "images": image_flags}
    plan = [e for e in PLAN if args.only is None or e.key in args.only]
    out = Path(args.out)
    # every experiment's flags are checked by its own parser before anything is written
    for exp in plan:
        parse_experiment(exp, experiment_argv(exp, args, data_flags, resume=False))

    config = {"command": NAME, "budget": args.budget, "seed": args.seed,
              "mnist": mnist_text, "images": image_text, "device": args.device,
              "quiet": args.quiet, "out": str(out),
              "only": None if args.only is None else sorted(args.only)}
    run_dir = Run(out, config, resume=True, resumable={"only"})  # a run may go on piece by piece
    state_path = run_dir.out / STATE_NAME
    state = _read_state(state_path)
    state.setdefault("experiments", {})
    state.update({
        "command_line": command_line(NAME, _reproduce_argv(args)),
        "budget": args.budget, "seed": args.seed, "mnist": mnist_text, "images": image_text,
        "started": _now(), "finished": None, "machine": _machine(),
    })
    state.setdefault("first_started", state["started"])
    started = time.perf_counter()
    failures = []
    say = distributed.on_main(lambda text: print(text, flush=True))
    for k, exp in enumerate(plan, 1):
        elapsed = _minutes(time.perf_counter() - started)
        heading = f"[{k}/{len(plan)}] {exp.key}: {exp.title} (elapsed {elapsed})"
        if is_finished(run_dir.out, exp.key, state):
            say(f"{heading}: finished in an earlier run, skipped")
            continue
        resume = (run_dir.out / exp.key / "config.json").exists()
        say(heading + (", resuming" if resume else ""))
        argv = experiment_argv(exp, args, data_flags, resume)
        earlier = state["experiments"].get(exp.key, {})
        # an interrupted or failed attempt's time counts in the experiment's wall time
        before = float(earlier.get("wall_seconds", 0.0)) if resume else 0.0
        entry = {"status": "running", "command_line": command_line(
            exp.command_module().NAME, argv), "resumed": resume, "budget_note":
            exp.notes.get(args.budget, ""), "git": state["machine"]["git"],
            "attempts": int(earlier.get("attempts", 1)) + 1 if resume else 1}
        state["experiments"][exp.key] = entry
        t0 = time.perf_counter()
        try:
            sub = exp.command_module().run(parse_experiment(exp, argv))
            sub.close()
            keep_configs()  # this experiment went through: its config.json stands
            entry["status"] = "done"
        except KeyboardInterrupt:
            entry["status"] = "interrupted"
            print(f"reproduce: interrupted in {exp.key}; run the same command again to resume",
                  file=sys.stderr, flush=True)
            raise
        except Exception as exc:  # one failed experiment must not lose the others
            if isinstance(exc, ValueError | TypeError):  # refused: its folder keeps its config
                restore_configs()
            entry["status"] = "failed"
            entry["error"] = f"{type(exc).__name__}: {exc}"
            failures.append(exp.key)
            print(f"  {exp.key} failed: {entry['error']}", file=sys.stderr, flush=True)
        finally:
            entry["wall_seconds"] = round(before + time.perf_counter() - t0, 2)
            entry["finished"] = _now()
            entry["load_average_end"] = _load()
            if distributed.is_main():  # under torchrun rank 0 alone keeps the report
                write_json(state_path, state)
                write_report(run_dir.out, PLAN, state)
        say(f"  {exp.key}: {entry['status']} in {entry['wall_seconds']:.0f} s")

    if not distributed.is_main():
        return run_dir
    state["finished"] = _now()
    state["wall_seconds_this_run"] = round(time.perf_counter() - started, 2)
    write_json(state_path, state)
    for name in ("README.md", "index.html", "claims.json"):
        run_dir.path(name)
    results = write_report(run_dir.out, PLAN, state)
    print(summary_text(results, run_dir.out))
    if failures:
        raise ValueError(f"{len(failures)} experiment(s) failed ({', '.join(failures)}); the "
                         f"report in {run_dir.out} says why; run the same command to retry them")
    return run_dir


def summary_text(results: dict[str, list], out: Path) -> str:
    """Claims held per experiment and where the report is.

    Parameters
    ----------
    results : dict of str to list of ClaimResult
        Output of :func:`~latentebm.experiments.report.write_report`.
    out : pathlib.Path
        The reproduce folder.

    Returns
    -------
    str
        Several lines of text.
    """
    lines = ["lecture claims:"]
    for exp in PLAN:
        judged = results.get(exp.key)
        if judged is None:
            continue
        held = sum(r.holds is True for r in judged)
        lines.append(f"  {exp.key:>13}: {held} of {len(claims_for(exp.key))} hold")
        for r in judged:
            lines.append(f"    {r.verdict:>13}: {r.claim.criterion}")
    lines.append(f"report: {out / 'index.html'} and {out / 'README.md'}")
    return "\n".join(lines)
