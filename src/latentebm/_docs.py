"""Shared numpydoc fragments and the decorator that puts them into docstrings.

A docstring names a fragment on a line of its own, ``{name}``, indented as the text it stands
for; :func:`fill_doc` replaces that line by the fragment, every line indented alike. Only
whole-line placeholders are filled, so braces elsewhere in a docstring (``{0, 1}``, format
examples) are left alone. An unknown name raises ``KeyError`` at import time.

Fragments describe parameters (``name : type`` and an indented description) or whole
``Returns`` sections; the ``Parameters`` heading itself stays in every docstring.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Mapping
from typing import TypeVar

T = TypeVar("T")

_PLACEHOLDER = re.compile(r"^([ \t]*)\{(\w+)\}[ \t]*$", re.MULTILINE)


def _returns(kind: str, text: str = "") -> str:
    return "Returns\n-------\n" + kind + ("\n    " + text if text else "")


DOCS: dict[str, str] = {
    # ------------------------------------------------------------ codes and signals
    "z_codes": "z : torch.Tensor of shape (batch, *code_dims)\n    Codes.",
    "z_latents": "z : torch.Tensor of shape (batch, *code_dims)\n    Latents.",
    "c_code_shaped": "c : torch.Tensor of shape (batch, *code_dims)\n    Code-shaped tensor.",
    "y_observations": "y : torch.Tensor of shape (batch, *signal_dims)\n    Observations.",
    "h_hidden": "h : torch.Tensor of shape (batch, ...) or None\n    The predictor's output.",
    "x_any": ("x : array-like, torch.Tensor of shape (batch, ...) or None\n"
              "    Inputs of the predictor (``None`` without one)."),
    "y_any": "y : array-like or torch.Tensor of shape (batch, *signal_dims)\n    Observations.",
    "z_dense": "z : torch.Tensor of shape (batch, n_atoms)\n    Codes.",
    "Y_dense": "Y : torch.Tensor of shape (batch, n_features)\n    Signals.",
    "z_maps": "z : torch.Tensor of shape (batch, n_atoms, H', W')\n    Code maps.",
    "prox_v": ("v : torch.Tensor of shape (batch, *code_dims)\n"
               "    Point to evaluate the proximal operator at."),
    "prox_tau": ("tau : float or torch.Tensor\n    Threshold: a number, a 0-dim tensor, "
                 "or a tensor broadcastable against ``v``."),
    # ------------------------------------------------------------ command modules and figures
    "cmd_parser": "parser : argparse.ArgumentParser\n    The subcommand's parser.",
    "png_path": "path : str or os.PathLike\n    The PNG file to write.",
    "png_path_short": "path : str or os.PathLike\n    PNG file to write.",
    "returns_png": _returns("pathlib.Path", "``path``."),
    "plot_title": "title : str or None\n    Title above the plot.",
    # ------------------------------------------------------------ solvers and models
    "lam_weight": "lam : float\n    Penalty weight ``λ``.",
    "lam_nonneg": "lam : float\n    λ ≥ 0.",
    "max_iter_cap": "max_iter : int\n    Iteration cap.",
    "solver_callback": ("callback : callable or None\n"
                        "    ``callback(iteration, IterationState)`` after every iteration."),
    "lasso_YWZ": ("Y : array-like or torch.Tensor of shape (batch, n_features)\n"
                  "    Signals (or images ``(batch, channels, H, W)`` for a convolutional "
                  "operator).\n"
                  "W : array-like, torch.Tensor of shape (n_features, n_atoms), or LinearOperator\n"
                  "    The dictionary.\n"
                  "Z : array-like or torch.Tensor of shape (batch, *code_dims)\n"
                  "    Codes, ``(batch, n_atoms)`` for a dense dictionary."),
    "returns_solver_result": _returns(
        "SolverResult",
        "NumPy arrays when ``Y`` was NumPy, tensors otherwise. The solve runs without\n"
        "    autograd: the tensors carry no gradient even when an input requires one\n"
        "    (differentiate the energy at the returned codes, e.g.\n"
        "    :func:`~latentebm.lasso_energy`, or unroll the iterations as\n"
        "    :class:`~latentebm.LISTA` does)."),
    "reg_penalty": "reg : Regularizer\n    The penalty ``R``.",
    "op_decoder": "op : LinearOperator\n    The decoder ``A``.",
    "error_name": "name : str\n    Name used in error messages.",
    "check_name_Y": 'name : str, default="Y"\n    Name of the argument, used in the error message.',
    "check_name_Z": 'name : str, default="Z"\n    Name of the argument, used in the error message.',
    "model_device": ("device : str, torch.device or None, default=None\n"
                     "    Device of the model (CPU by default)."),
    "model_dtype": "dtype : torch.dtype, default=torch.float32\n    Dtype of the model.",
    "signal_shape_y": ("signal_shape : tuple of int\n"
                       "    Shape of one ``y``, without the batch dimension."),
    "sklearn_y_ignored": "y : None\n    Ignored.",
    "setting_seed": ("setting : Setting\n    The setting.\n"
                     "seed_index : int\n    The seed's index in the setting."),
    "vae_images": ("x : array-like or torch.Tensor of shape (n, *input_shape) or (n, n_features)\n"
                   "    Images."),
    "vae_batch_size": "batch_size : int, default=1000\n    Images per encoder call.",
    "vae_images_batches": ("x : array-like or torch.Tensor of shape (n, *input_shape) or "
                           "(n, n_features)\n    Images.\n"
                           "batch_size : int, default=1000\n    Images per encoder call."),
    "Y_dense_any": "Y : array-like or torch.Tensor of shape (batch, n_features)\n    Signals.",
    "fit_signals": ("Y : array-like or torch.Tensor of shape (n_samples, n_features)\n"
                    "    Training signals."),
    "fit_images": ("Y : array-like or torch.Tensor of shape (n_images, channels, H, W)\n"
                   "    Training images."),
    "returns_history": _returns("list of dict", "The per-epoch history."),
    "returns_any_per_sample": _returns("numpy.ndarray or torch.Tensor of shape (batch,)"),
    "returns_any_codes": _returns("numpy.ndarray or torch.Tensor of shape (batch, *code_dims)"),
    "returns_filter_maps": _returns("torch.Tensor of shape (batch, n_filters, H', W')"),
    # ------------------------------------------------------------ data, metrics, updates
    "idx_ndim": "ndim : int or None\n    Required rank, or ``None`` to accept any.",
    "returns_idx": _returns("ndarray of shape (d_1, ..., d_ndim)",
                            "uint8 array with the shape given in the header."),
    "stats_AB": ("A : torch.Tensor of shape (n_atoms, n_atoms)\n"
                 "    Statistic ``Σ z zᵀ``, updated in place.\n"
                 "B : torch.Tensor of shape (n_features, n_atoms)\n"
                 "    Statistic ``Σ y zᵀ``, updated in place."),
    "forgetting": ("step : int\n    Mini-batch index, 1-based.\n"
                   "rho : float, default=8.0\n    Exponent of the forgetting factor."),
    "atoms_rows": ("atoms : array_like of shape (n_atoms, n_features)\n"
                   "    One flattened atom per row (``n_features = prod(image_shape)``).\n"
                   "image_shape : tuple of int\n    ``(h, w)`` or ``(h, w, channels)``."),
    "filter_2d": "filter_2d : array_like of shape (h, w)\n    One grey filter, at least 3×3.",
    "fft_grid": "grid : tuple of int\n    ``(gh, gw)``, the FFT size.",
    # ------------------------------------------------------------ smooth objectives
    "rows_iterates": ("rows : torch.Tensor of shape (n,)\n"
                      "    Indices of the samples in the batch being solved.\n"
                      "z : torch.Tensor of shape (n, *code_dims)\n    Their iterates."),
    "rows_single": ("rows : torch.Tensor of shape (1,)\n    Unused.\n"
                    "z : torch.Tensor of shape (1, *V.shape)\n"
                    "    The variable with a leading batch dimension of one."),
    "returns_rows": _returns("torch.Tensor of shape (n,)"),
    # ------------------------------------------------------------ whole Returns sections
    "returns_per_sample": _returns("torch.Tensor of shape (batch,)"),
    "returns_like_v": _returns("torch.Tensor of the same shape as ``v``"),
    "returns_code_shaped": _returns("torch.Tensor of shape (batch, *code_dims)"),
    "returns_signals": _returns("torch.Tensor of shape (batch, *signal_dims)"),
    "returns_dense_codes": _returns("torch.Tensor of shape (batch, n_atoms)"),
    "returns_dense_signals": _returns("torch.Tensor of shape (batch, n_features)"),
    "returns_maps": _returns("torch.Tensor of shape (batch, n_atoms, H', W')"),
    "returns_stacked_maps": _returns("torch.Tensor of shape (batch, C·H·W + n_atoms·H'·W')",
                                     "Image and code parts, flattened and concatenated."),
    "returns_stacked_dense": _returns("torch.Tensor of shape (batch, n_features + n_atoms)",
                                      "Signal and code parts, concatenated."),
    "returns_images": _returns("torch.Tensor of shape (batch, channels, H, W)"),
    "returns_shape": _returns("tuple of int"),
}
"""The shared fragments, by name."""
DOCS["solve_args"] = "\n".join(
    [DOCS["x_any"], DOCS["y_any"], "**kwargs\n    Options of :meth:`solve`."])
DOCS["Y_signals"] = "Y : torch.Tensor of shape (batch, *signal_dims)\n    Signals."
DOCS["check_signals_Y"] = ("y : torch.Tensor of shape (batch, *signal_dims)\n"
                           "    Signals to check.\n" + DOCS["check_name_Y"])
DOCS["check_codes_Z"] = ("z : torch.Tensor of shape (batch, *code_dims)\n"
                         "    Codes to check.\n" + DOCS["check_name_Z"])
DOCS["gap_stopping"] = ("max_iter, tol, check_every : int, float, int\n"
                        "    Iteration cap, relative duality-gap tolerance per sample, and how "
                        "often the gap is\n    checked.")


def fit_options(*, checkpoint_every: int, unit: str = "step", callback_args: str = "step, model",
                callback_note: str = "") -> str:
    """The entries of the options every model's ``fit`` ends with (``checkpoint``,
    ``checkpoint_every``, ``resume``, ``callback``, ``progress``), as a fragment for
    :func:`doc_filler`.

    Parameters
    ----------
    checkpoint_every : int
        The default of ``checkpoint_every``.
    unit : str, default="step"
        What ``fit`` counts: a ``"step"`` or an ``"update"``.
    callback_args : str, default="step, model"
        The callback's arguments.
    callback_note : str, default=""
        Said after the callback's description (e.g. ``"; ``x`` ``(batch,)``"``).

    Returns
    -------
    str
    """
    return (
        "checkpoint : str, os.PathLike or None, default=None\n"
        f"    A ``.safetensors`` file written every ``checkpoint_every`` {unit}s, at the end, "
        f"and on\n    Ctrl-C (after the {unit} in flight).\n"
        f"checkpoint_every : int, default={checkpoint_every}\n"
        f"    {unit.capitalize()}s between checkpoints.\n"
        "resume : bool, default=False\n    Continue from ``checkpoint``.\n"
        "callback : callable or None, default=None\n"
        f"    ``callback({callback_args})`` after every {unit}{callback_note}.\n"
        "progress : bool, default=True\n    Show a progress bar (rank 0 only)."
    )


def fit_batches(*, epochs: int, batch_size: int, n: str = "n_samples", epochs_note: str = "",
                batch: str = "Mini-batch") -> str:
    """The ``epochs`` and ``batch_size`` entries of a model's ``fit``, as a fragment for
    :func:`doc_filler`.

    Parameters
    ----------
    epochs : int
        The default of ``epochs``.
    batch_size : int
        The default of ``batch_size``.
    n : str, default="n_samples"
        The number of training samples that ``batch_size`` is clipped to.
    epochs_note : str, default=""
        Said after "Number of epochs" (e.g. ``" (also the length of the cosine decay)"``).
    batch : str, default="Mini-batch"
        What ``batch_size`` is the size of (``"Global mini-batch"`` under ``torchrun``).

    Returns
    -------
    str
    """
    return (f"epochs : int, default={epochs}\n    Number of epochs{epochs_note}.\n"
            f"batch_size : int, default={batch_size}\n"
            f"    {batch} size (clipped to ``{n}``).")


def _filled(doc: str, fragments: Mapping[str, str]) -> str:
    def expand(match: re.Match[str]) -> str:
        indent, name = match.groups()
        if name not in fragments:
            raise KeyError(f"no docstring fragment named {{{name}}}")
        return textwrap.indent(fragments[name], indent)

    return _PLACEHOLDER.sub(expand, doc)


def doc_filler(extra: Mapping[str, str] | None = None) -> Callable[[T], T]:
    """A :func:`fill_doc` that also knows the fragments ``extra`` (a module's own ones)."""
    fragments = DOCS if not extra else {**DOCS, **extra}

    def fill(obj: T) -> T:
        if isinstance(obj, type):
            for member in vars(obj).values():
                # a property, staticmethod or classmethod keeps its own copy of the doc
                if isinstance(member, (property, staticmethod, classmethod)):
                    if member.__doc__:
                        member.__doc__ = _filled(member.__doc__, fragments)
                    member = member.fget if isinstance(member, property) else member.__func__
                target = getattr(member, "__func__", member)
                if callable(target) and getattr(target, "__doc__", None):
                    target.__doc__ = _filled(target.__doc__, fragments)
        if getattr(obj, "__doc__", None):
            obj.__doc__ = _filled(obj.__doc__, fragments)
        return obj

    return fill


fill_doc = doc_filler()
"""Fill the ``{name}`` lines of a function's docstring, or of a class's and its methods'."""
