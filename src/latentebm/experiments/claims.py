"""The lecture's claims, each tied to the numbers an experiment writes to its ``metrics.json``.

A :class:`Claim` quotes the lecture (week 8, part 2 of NYU's Deep Learning course), names the
metric keys it is judged by and decides, from those numbers alone, whether it holds. Keys are
looked up at evaluation time (:meth:`Claim.evaluate`), so a claim whose key a command no longer
writes is reported as *not measured* with the reason, never silently dropped or guessed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: A location in a metrics dictionary: dictionary keys and list indices, outermost first.
KeyPath = tuple[str | int, ...]

__all__ = [
    "CLAIMS",
    "Claim",
    "ClaimResult",
    "KeyPath",
    "claims_for",
    "lecture_verdicts",
    "lookup",
    "path_text",
]


def lookup(metrics: Any, path: Sequence[str | int]) -> Any:
    """The value at ``path`` in nested dictionaries and lists.

    Parameters
    ----------
    metrics : dict or list
        A parsed ``metrics.json``.
    path : sequence of str or int
        Dictionary keys (str) and list indices (int), outermost first.

    Returns
    -------
    object
        The value found.

    Raises
    ------
    KeyError
        Naming the first part of ``path`` that is missing.
    """
    node = metrics
    for depth, part in enumerate(path):
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            raise KeyError(f"metrics.json has no {path_text(path[: depth + 1])}") from None
    return node


def path_text(path: Sequence[str | int]) -> str:
    """``path`` as it is shown in the report: ``a.b[3]``, keys with spaces or dots quoted.

    Parameters
    ----------
    path : sequence of str or int
        Dictionary keys (str) and list indices (int), outermost first.

    Returns
    -------
    str
        The path as text.
    """
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.replace("_", "").isalnum() and part.isascii():
            text += f".{part}" if text else part
        else:
            text += f'["{part}"]'
    return text


def _parse(dotted: str) -> KeyPath:
    return tuple(int(p) if p.lstrip("-").isdigit() else p for p in dotted.split("."))


def static(*dotted: str) -> Callable[[Mapping[str, Any]], tuple[KeyPath, ...]]:
    """A locator for fixed keys (``"a.b.0"`` style).

    Parameters
    ----------
    *dotted : str
        Dotted key paths; parts made of digits become list indices.

    Returns
    -------
    callable
        ``locate(metrics)`` returning the parsed paths, the same for every ``metrics``.
    """
    paths = tuple(_parse(d) for d in dotted)
    return lambda metrics: paths


def first_present(*dotted: str) -> Callable[[Mapping[str, Any]], tuple[KeyPath, ...]]:
    """A locator for one key written under different names by different versions of a command:
    the first that ``metrics.json`` holds.

    Parameters
    ----------
    *dotted : str
        Candidate dotted key paths, in order of preference.

    Returns
    -------
    callable
        ``locate(metrics)`` returning a 1-tuple with the first path present in ``metrics``;
        it raises ``KeyError`` when none is.
    """
    paths = tuple(_parse(d) for d in dotted)

    def locate(metrics: Mapping[str, Any]) -> tuple[KeyPath, ...]:
        for path in paths:
            try:
                lookup(metrics, path)
            except KeyError:
                continue
            return (path,)
        raise KeyError("metrics.json has none of " + ", ".join(dotted))

    return locate


@dataclass(frozen=True)
class ClaimResult:
    """One claim judged on one run.

    Parameters
    ----------
    claim : Claim
        The claim.
    paths : tuple of KeyPath
        The keys looked up in the experiment's ``metrics.json`` (empty when not measured).
    values : tuple
        The values found there, in the order of ``paths``.
    holds : bool or None
        Whether the claim holds; ``None`` when it could not be measured.
    note : str
        Why it was not measured, or empty.
    """

    claim: Claim
    paths: tuple[KeyPath, ...]
    values: tuple[Any, ...]
    holds: bool | None
    note: str = ""

    @property
    def verdict(self) -> str:
        """``holds``, ``does not hold`` or ``not measured``."""
        return {True: "holds", False: "does not hold", None: "not measured"}[self.holds]


@dataclass(frozen=True)
class Claim:
    """One sentence of the lecture and the test on measured numbers that decides it.

    Parameters
    ----------
    experiment : str
        The experiment it belongs to (a key of the reproduce plan).
    lecture : str
        The lecture's words.
    criterion : str
        The test in words, as the report prints it.
    locate : callable
        ``metrics -> tuple of KeyPath``: the keys the claim is judged by (``KeyError`` when
        the metrics do not hold them).
    decide : callable
        ``(*values) -> bool`` on the values at those keys, in order.
    """

    experiment: str
    lecture: str
    criterion: str
    locate: Callable[[Mapping[str, Any]], tuple[KeyPath, ...]] = field(repr=False)
    decide: Callable[..., bool] = field(repr=False)

    def evaluate(self, metrics: Mapping[str, Any]) -> ClaimResult:
        """Judge the claim on one experiment's parsed ``metrics.json``.

        Parameters
        ----------
        metrics : dict
            The experiment's metrics.

        Returns
        -------
        ClaimResult
            With ``holds=None`` and the reason in ``note`` when a key is missing or a value
            is not a finite number.
        """
        try:
            paths = tuple(self.locate(metrics))
            values = tuple(lookup(metrics, p) for p in paths)
        except (KeyError, ValueError) as exc:
            return ClaimResult(self, (), (), None, str(exc).strip("'\""))
        bad = [path_text(p) for p, v in zip(paths, values, strict=True) if not _usable(v)]
        if bad:
            return ClaimResult(self, paths, values, None,
                               "not a finite number: " + ", ".join(bad))
        return ClaimResult(self, paths, values, bool(self.decide(*values)))


def _usable(value: Any) -> bool:
    """A finite number, or ``None`` (the commands' "not reached within the limit")."""
    if value is None:
        return True
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _never_reached(n: int | None) -> float:
    """Iteration counts: ``None`` means "not within the traced iterations", i.e. more."""
    return math.inf if n is None else n


# ------------------------------------------------------------------------- locators


def _deepest_row(metrics: Mapping[str, Any]) -> int:
    """Index of the deepest network of the first variant in a ``lista`` table."""
    rows = metrics["rows"]
    if not rows:
        raise KeyError("metrics.json has an empty rows table")
    first = rows[0]["variant"]
    return max((r["K"], i) for i, r in enumerate(rows) if r["variant"] == first)[1]


def _lista_iterations(metrics: Mapping[str, Any]) -> tuple[KeyPath, ...]:
    i = _deepest_row(metrics)
    return ("rows", i, "fista_iterations"), ("rows", i, "ista_iterations")


def _lista_depth(metrics: Mapping[str, Any]) -> tuple[KeyPath, ...]:
    i = _deepest_row(metrics)
    return ("rows", i, "K"), ("rows", i, "fista_iterations")


def _per_encoder(*key: str) -> Callable[[Mapping[str, Any]], tuple[KeyPath, ...]]:
    def locate(metrics: Mapping[str, Any]) -> tuple[KeyPath, ...]:
        names = sorted(metrics["encoders"])
        if not names:
            raise KeyError("metrics.json has no encoders")
        return tuple(("encoders", n, *key) for n in names)
    return locate


def _trained_vs_untrained_saving(metrics: Mapping[str, Any]) -> tuple[KeyPath, ...]:
    """Per encoder, the saved fraction of FISTA's iterations from its codes, then from its
    untrained twin's."""
    return tuple(path for trained in _per_encoder("warm_start", "saved_fraction")(metrics)
                 for path in (trained, (*trained[:2], "warm_start_untrained", trained[3])))


def _per_count(key: str) -> Callable[[Mapping[str, Any]], tuple[KeyPath, ...]]:
    def locate(metrics: Mapping[str, Any]) -> tuple[KeyPath, ...]:
        counts = sorted(metrics["per_count"], key=int)
        return tuple(("per_count", c, key) for c in counts)
    return locate


def _count(count: int, key: str) -> Callable[[Mapping[str, Any]], tuple[KeyPath, ...]]:
    def locate(metrics: Mapping[str, Any]) -> tuple[KeyPath, ...]:
        if str(count) not in metrics["per_count"]:
            raise KeyError(f"the sweep has no {count}-filter model (--counts)")
        return (("per_count", str(count), key),)
    return locate


def _pretrain_gain(mode: str, which: str) -> Callable[[Mapping[str, Any]], tuple[KeyPath, ...]]:
    """The paired gain (pretrained − random) of first-layer ``mode`` with the fewest or the
    most labels per class: its mean and its paired t-test p-value (p < 0.05 is the same
    decision as a 95 % t interval that excludes 0)."""
    def locate(metrics: Mapping[str, Any]) -> tuple[KeyPath, ...]:
        by_count = metrics["accuracy_by_first_layer"][mode]
        pick = min if which == "fewest" else max
        n = pick(by_count, key=int)
        return (("accuracy_by_first_layer", mode, n, "difference", "mean"),
                ("accuracy_by_first_layer", mode, n, "difference", "p_t"))
    return locate


def _betas(metrics: Mapping[str, Any]) -> dict[float, str]:
    """β → tag of the learned-σ models in a ``vae-fuzzy-balls`` summary."""
    out = {}
    for tag in metrics:
        if tag.startswith("beta_"):
            try:
                out[float(tag.removeprefix("beta_"))] = tag
            except ValueError:
                continue
    if 1.0 not in out or len(out) < 2:
        raise KeyError("the β sweep needs β = 1 and at least one other β (--betas)")
    return out


def _weak_vs_one(key: str) -> Callable[[Mapping[str, Any]], tuple[KeyPath, ...]]:
    def locate(metrics: Mapping[str, Any]) -> tuple[KeyPath, ...]:
        betas = _betas(metrics)
        weak = min(betas)
        if weak >= 1.0:
            raise KeyError("the β sweep has no β below 1 (--betas)")
        return (betas[weak], key), (betas[1.0], key)
    return locate


def _strong_vs_one(key: str) -> Callable[[Mapping[str, Any]], tuple[KeyPath, ...]]:
    def locate(metrics: Mapping[str, Any]) -> tuple[KeyPath, ...]:
        betas = _betas(metrics)
        strong = max(betas)
        if strong <= 1.0:
            raise KeyError("the β sweep has no β above 1 (--betas)")
        return (betas[strong], key), (betas[1.0], key)
    return locate


def _sigma_ends(metrics: Mapping[str, Any]) -> tuple[KeyPath, ...]:
    betas = _betas(metrics)
    if max(betas) <= 1.0:
        raise KeyError("the β sweep has no β above 1 (--betas)")
    weak, strong = betas[min(betas)], betas[max(betas)]
    n_dims = len(lookup(metrics, (strong, "mean_sigma_per_dim")))
    return tuple((tag, "mean_sigma_per_dim", d) for tag in (weak, strong) for d in range(n_dims))


def _conditional(*keys: tuple[str, ...], with_free: bool
                 ) -> Callable[[Mapping[str, Any]], tuple[KeyPath, ...]]:
    """``keys`` of the regularised model, then (``with_free``) the same keys of the λ = 0 one."""
    def locate(metrics: Mapping[str, Any]) -> tuple[KeyPath, ...]:
        models = metrics["models"]
        reg = [label for label, m in models.items() if m["lam"] > 0]
        free = [label for label, m in models.items() if m["lam"] == 0]
        if not reg or (with_free and not free):
            raise KeyError("metrics.json lacks the λ > 0 or the λ = 0 model")
        labels = [reg[0], free[0]] if with_free else [reg[0]]
        return tuple(("models", label, *k) for label in labels for k in keys)
    return locate


# --------------------------------------------------------------------------- claims

_SIMILAR = 0.8

CLAIMS: tuple[Claim, ...] = (
    Claim(
        "strokes",
        "When a sparse coding system with 256 dimensional latent vector is applied to MNIST "
        "handwritten digits, the system learns a set of 256 strokes",
        "at least 80 % of the atoms are strokes (share by the command's stroke measure)",
        first_present("strokes.share", "strokes.share_localized"),
        lambda share: share >= 0.8,
    ),
    Claim(
        "strokes",
        "[strokes] that can be linearly combined to nearly reproduce the entire training set",
        "held-out relative reconstruction error ‖y − Wz‖² / ‖y‖² ≤ 0.1",
        static("test_relative_reconstruction_error"),
        lambda err: err <= 0.1,
    ),
    Claim(
        "strokes",
        "The sparse regularizer ensures that they can be reproduced from a small number of "
        "strokes",
        "mean non-zeros per held-out code ≤ 10 % of the atoms",
        lambda m: (("test_mean_nonzeros",), *first_present("n_atoms", "strokes.n_atoms")(m)),
        lambda nonzeros, n_atoms: nonzeros <= 0.1 * n_atoms,
    ),
    Claim(
        "gabors",
        "When a sparse coding system is trained on natural image patches, the learned features "
        "are gabor filters, which are oriented edges",
        "median Gabor-fit R² of the atoms ≥ 0.9, and at least 80 % of the atoms oriented (a good "
        "fit that is not its own quarter turn: blobs and centre-surround filters fit a Gabor "
        "as well)",
        static("gabor.median_r2", "gabor.n_oriented", "gabor.n_atoms"),
        lambda r2, oriented, n_atoms: r2 >= 0.9 and oriented >= 0.8 * n_atoms,
    ),
    Claim(
        "lista",
        "FISTA (fast ISTA) is an algorithm that optimizes the sparse coding energy function "
        "E(y,z) with respect to z",
        "FISTA needs fewer iterations than ISTA to reach the deepest network's code error "
        "(null: not reached within the traced iterations)",
        _lista_iterations,
        lambda fista, ista: _never_reached(fista) < _never_reached(ista),
    ),
    Claim(
        "lista",
        "The trained network then produces a good z in fewer iterations than the FISTA "
        "algorithm",
        "FISTA needs more iterations than the network's K steps to reach its code error "
        "(null: more than the traced iterations)",
        _lista_depth,
        lambda k, fista: _never_reached(fista) > k,
    ),
    Claim(
        "psd",
        "train a network to predict the optimal latent variable z",
        "the best encoder's one-pass codes have a held-out Lasso energy within 5 % of FISTA's "
        "optimum",
        _per_encoder("energy_excess"),
        lambda *excess: min(excess) <= 0.05,
    ),
    Claim(
        "psd",
        "The trained network then produces a good z in fewer iterations than the FISTA "
        "algorithm",
        "warm-starting FISTA from every encoder's codes saves more iterations than from the "
        "same encoder untrained on the learned decoder (its ISTA-like initialisation, which "
        "saves some already)",
        _trained_vs_untrained_saving,
        lambda *saved: all(t > max(u, 0.0) for t, u in zip(saved[::2], saved[1::2],
                                                             strict=True)),
    ),
    Claim(
        "conv-filters",
        "if we impose that there is only one filter then it is just a centre surround type "
        "filter",
        "centre-surround score of the single filter (DoG fit R² × balance, in [0, 1]) ≥ 0.5, "
        "and the filter not oriented (an edge's DoG fit can score as high)",
        lambda m: (("single_filter_centre_surround_score",), ("per_count", "1", "oriented_share")),
        lambda score, oriented: score >= 0.5 and oriented == 0,
    ),
    Claim(
        "conv-filters",
        "With four filters, we get oriented edges (horizontal and vertical)",
        "at least half of the 4 decoder filters fit a Gabor with R² ≥ 0.8 that is not a blob "
        "(correlation with its own quarter turn ≤ 0.9), and more of them than of the 4 image "
        "windows they start from (whitened natural images hold edges already)",
        lambda m: (*_count(4, "oriented_share")(m), *_count(4, "initial_oriented_share")(m)),
        lambda share, initial: share >= 0.5 and share > initial,
    ),
    Claim(
        "conv-filters",
        "With eight filters we can get oriented edges at 8 different orientations",
        "the 8 filters' oriented Gabor fits spread (spread ≥ 0.7; 1: evenly spread, 0: all "
        "alike; two orthogonal orientations give 1) over at least 6 of the 8 22.5° orientation "
        "bins (coverage ≥ 0.75)",
        lambda m: (*_count(8, "orientation_spread")(m), *_count(8, "orientation_coverage")(m)),
        lambda spread, coverage: spread >= 0.7 and coverage >= 0.75,
    ),
    Claim(
        "conv-filters",
        "The filters in the encoder and decoder look very similar",
        f"mean |cos| between encoder and decoder filters ≥ {_SIMILAR} for every filter count "
        "(the encoder starts as a copy of the decoder, at 1: this checks that training keeps "
        "them alike, not that it makes them so)",
        _per_count("encoder_decoder_similarity_mean"),
        lambda *sim: min(sim) >= _SIMILAR,
    ),
    Claim(
        "conv-colour",
        "The Z vector is very sparse space where there are just few components that are white "
        "or black (non-grey)",
        "at most 10 % of the held-out photograph's code-map entries are non-zero",
        static("crop_code_nonzero_share"),
        lambda share: share <= 0.1,
    ),
    Claim(
        "conv-colour",
        "The filters in the encoder and decoder look very similar",
        f"mean |cos| between encoder and decoder kernels ≥ {_SIMILAR} (the encoder starts as a "
        "copy of the decoder, at 1: training keeps them alike)",
        static("encoder_decoder_similarity_mean"),
        lambda sim: sim >= _SIMILAR,
    ),
    Claim(
        "pretrain",
        "in cases where the number of samples are not large enough [...] it can help to boost "
        "performance",
        "with the fewest labels and the first layer kept as initialised (frozen), the "
        "pretrained layer's accuracy beats the random one's, significantly (paired over seeds: "
        "t-test p < 0.05 and a 95 % interval above 0)",
        _pretrain_gain("frozen", "fewest"),
        lambda gain, p: gain > 0 and p < 0.05,
    ),
    Claim(
        "pretrain",
        "if we take these features and plug them in a convolutional net [...] we don't "
        "necessarily get better results than training [...] from scratch",
        "with the most labels and the first layer fine-tuned, pretraining gives no significant "
        "gain",
        _pretrain_gain("finetune", "most"),
        lambda gain, p: not (gain > 0 and p < 0.05),
    ),
    Claim(
        "vae",
        "Variational Autoencoders [...] the information content of the code is limited by "
        "making it noisy",
        "the KL term (nats the noisy code carries per digit) is at least 1 nat (the code "
        "carries something: an untrained VAE's is about 0.1) and below the reconstruction "
        "cost's nats (the code does not copy the digit)",
        static("kl", "reconstruction_nats"),
        lambda kl, rec: 1 <= kl < rec,
    ),
    Claim(
        "fuzzy-balls",
        "If the spring is too weak, then the fuzzy balls would fly away from the origin",
        "E‖μ‖² of the test codes is larger at the weakest β than at β = 1",
        _weak_vs_one("e_mu_sq"),
        lambda weak, one: weak > one,
    ),
    Claim(
        "fuzzy-balls",
        "The system tries to make the code vectors z̄ as large as possible so that the effect "
        "of z (noise) is as small as possible",
        "code-to-noise ratio E‖μ‖² / E‖σ‖² is larger at the weakest β than at β = 1",
        _weak_vs_one("code_to_noise"),
        lambda weak, one: weak > one,
    ),
    Claim(
        "fuzzy-balls",
        "And if it's too strong, then they would collapse at the origin",
        "E‖μ‖² of the test codes is smaller at the strongest β than at β = 1",
        _strong_vs_one("e_mu_sq"),
        lambda strong, one: strong < one,
    ),
    Claim(
        "fuzzy-balls",
        "a penalty function (KL Divergence) that tries to make the variance close to 1",
        "at the strongest β every dimension's mean σ is within 0.25 of 1, and closer to 1 than "
        "at the weakest β",
        _sigma_ends,
        lambda *s: all(abs(b - 1) <= 0.25 and abs(b - 1) < abs(a - 1)
                       for a, b in zip(s[: len(s) // 2], s[len(s) // 2:], strict=True)),
    ),
    Claim(
        "conditional",
        "Models with latent variables are capable of making a distribution of predictions ȳ "
        "conditioned on an observed input x and an additional latent variable z",
        "the best of N completions (N latents) is closer to the true bottom half than the z = 0 "
        "prediction (per-pixel MSE)",
        _conditional(("completion", "best_of_n_mse"), ("completion", "z0_mse"), with_free=False),
        lambda best, zero: best < zero,
    ),
    Claim(
        "conditional",
        "if the latent variable z has too much expressive power [...] the energy function will "
        "be 0 everywhere",
        "the true bottom half is ranked below other digits' (lower free energy) more often "
        "with λ > 0 than with λ = 0, by at least 0.1 (an untrained model's rankings are both "
        "near chance, 0.5)",
        _conditional(("ranking", "pairwise_ranking"), with_free=True),
        lambda reg, free: reg >= free + 0.1,
    ),
    Claim(
        "conditional",
        "A natural solution is to limit the information capacity of the latent variable z",
        "the regularised model's codes have fewer non-zeros than the λ = 0 model's",
        _conditional(("mean_nonzeros_train_bank",), with_free=True),
        lambda reg, free: reg < free,
    ),
)


def claims_for(experiment: str) -> tuple[Claim, ...]:
    """The claims judged on ``experiment``'s metrics.

    Parameters
    ----------
    experiment : str
        A key of the reproduce plan, e.g. ``"strokes"``.

    Returns
    -------
    tuple of Claim
        Possibly empty.
    """
    return tuple(c for c in CLAIMS if c.experiment == experiment)


def lecture_verdicts(experiment: str, metrics_file: str | os.PathLike) -> str:
    """The lecture's claims on ``experiment`` judged on a run's ``metrics.json``, for the end
    of a command's printed result: per claim the lecture's words, then the test and its verdict.

    Parameters
    ----------
    experiment : str
        A key of the reproduce plan, e.g. ``"psd"``.
    metrics_file : str or os.PathLike
        The ``metrics.json`` the command has just written.

    Returns
    -------
    str
        Two lines a claim (empty when the experiment has none).
    """
    metrics = json.loads(Path(metrics_file).read_text())
    lines = []
    for claim in claims_for(experiment):
        result = claim.evaluate(metrics)
        note = f" ({result.note})" if result.note else ""
        lines += [f"  lecture: \u201c{claim.lecture}\u201d",
                  f"    {result.verdict}: {claim.criterion}{note}"]
    return "\n".join(lines)
