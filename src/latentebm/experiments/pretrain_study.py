"""The statistics and bookkeeping of ``latentebm pretrain``: settings, paired comparisons of the
pretrained against the randomly initialised first layer, the per-run store that lets a resumed
run skip finished classifier runs, and the printed table and verdicts.

Kept apart from the command so the statistics can be tested without training anything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from .._docs import fill_doc
from .._io import write_json

#: How the classifier treats its first layer.
FIRST_LAYER_MODES = ("finetune", "frozen")
#: The two arms of every paired comparison.
ARMS = ("pretrained", "random")
#: A paired difference is called significant below this two-sided p-value.
ALPHA = 0.05
#: What the lecture says about these features, printed beside the verdicts.
LECTURE_CLAIM = ("Lecture: features of a convolutional sparse auto-encoder plugged into a convnet "
                 "do not necessarily beat training from scratch, but can help when labelled "
                 "samples are few or categories are few.")


@dataclass(frozen=True, order=True)
class Setting:
    """One cell of the study: how many digit classes, labelled digits per class, and whether the
    classifier's first layer is fine-tuned or frozen (for both arms alike)."""

    classes: int
    labels_per_class: int
    first_layer: str

    @property
    def key(self) -> str:
        """Stable name in the JSON files, e.g. ``"10 classes/1 per class/frozen"``."""
        return f"{self.classes} classes/{self.labels_per_class} per class/{self.first_layer}"

    def describe(self) -> str:
        """The setting in words, for tables and verdicts."""
        layer = "fine-tuned" if self.first_layer == "finetune" else "frozen"
        per = "label" if self.labels_per_class == 1 else "labels"
        return (f"{self.classes} classes, {self.labels_per_class} {per}/class, "
                f"first layer {layer}")


def settings_grid(classes: Iterable[int], labels_per_class: Iterable[int],
                  first_layer: str) -> list[Setting]:
    """Every combination of ``classes`` × ``labels_per_class`` × first-layer mode.

    Parameters
    ----------
    classes, labels_per_class : iterable of int
        Values of ``--classes`` and ``--labels-per-class`` (duplicates dropped).
    first_layer : {"finetune", "frozen", "both"}
        ``--first-layer``.

    Returns
    -------
    list of Setting
        Sorted by classes, then labels per class, then mode.
    """
    modes = FIRST_LAYER_MODES if first_layer == "both" else (first_layer,)
    return sorted(Setting(c, n, m) for c in set(classes) for n in set(labels_per_class)
                  for m in modes)


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def paired_statistics(pretrained: Sequence[float], random: Sequence[float]) -> dict[str, Any]:
    """Compare the two arms' per-seed accuracies, seed by seed.

    Parameters
    ----------
    pretrained, random : sequence of float, shape (n_seeds,)
        Test accuracies; entry ``i`` of both comes from seed ``i`` (same labelled digits, same
        initialisation of every layer but the first).

    Returns
    -------
    dict
        ``pretrained`` and ``random``: ``{"mean", "std", "runs"}`` with the sample standard
        deviation (ddof = 1); ``difference``: the per-seed differences ``pretrained − random``
        (``runs``), their ``mean``, ``std`` (ddof = 1), 95 % confidence interval of the mean
        (``ci95``, Student t with n − 1 degrees of freedom), the paired t-test's ``p_t``, the
        Wilcoxon signed-rank test's ``p_wilcoxon`` with ``wilcoxon_note`` when n is too small
        for it to reach :data:`ALPHA`, ``wins`` (seeds where pretrained is ahead) and
        ``significant`` (``p_t`` < :data:`ALPHA` and the interval excludes 0). Quantities that
        need two seeds are ``None`` with one seed.
    """
    p = np.asarray(pretrained, dtype=np.float64)
    r = np.asarray(random, dtype=np.float64)
    if p.ndim != 1 or p.shape != r.shape or len(p) == 0:
        raise ValueError(f"need two equally long, non-empty lists of accuracies, got "
                         f"{p.shape} and {r.shape}")
    n = len(p)
    d = p - r

    def arm(x: np.ndarray) -> dict[str, Any]:
        return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if n > 1 else None,
                "runs": [float(v) for v in x]}

    diff: dict[str, Any] = {"runs": [float(v) for v in d], "mean": float(d.mean()), "n": n,
                            "wins": int((d > 0).sum()), "ties": int((d == 0).sum())}
    if n < 2:
        diff.update(std=None, ci95=None, p_t=None, p_wilcoxon=None, significant=False,
                    wilcoxon_note="one seed: no standard deviation, interval or test")
        return {"pretrained": arm(p), "random": arm(r), "difference": diff}
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    ci = [diff["mean"] - half, diff["mean"] + half]
    p_t = 1.0 if sd == 0 and diff["mean"] == 0 else (0.0 if sd == 0 else
                                                     float(stats.ttest_rel(p, r).pvalue))
    nonzero = int((d != 0).sum())
    p_w = 1.0 if nonzero == 0 else float(stats.wilcoxon(d).pvalue)
    smallest = 2.0 / 2**nonzero if nonzero else 1.0
    note = (f"with {nonzero} non-zero differences the two-sided Wilcoxon p cannot go below "
            f"{smallest:.3g}, so it cannot reach {ALPHA}" if smallest >= ALPHA else "")
    diff.update(std=sd, ci95=ci, p_t=_finite_or_none(p_t), p_wilcoxon=_finite_or_none(p_w),
                wilcoxon_note=note,
                significant=bool(p_t < ALPHA and (ci[0] > 0 or ci[1] < 0)))
    return {"pretrained": arm(p), "random": arm(r), "difference": diff}


def verdict(setting: Setting, summary: dict[str, Any]) -> str:
    """One sentence: is the pretrained first layer significantly better, worse, or neither?

    Parameters
    ----------
    setting : Setting
    summary : dict
        :func:`paired_statistics` of that setting.
    """
    d = summary["difference"]
    head = (f"{setting.describe()}: pretrained − random = {100 * d['mean']:+.1f} points")
    if d["ci95"] is None:
        return f"{head} (one seed: no test)."
    lo, hi = (100 * v for v in d["ci95"])
    p_t = d["p_t"]
    detail = (f" [95 % CI {lo:+.1f}, {hi:+.1f}], paired t p = {p_t:.3g}, pretrained ahead in "
              f"{d['wins']}/{d['n']} seeds")
    if d["significant"]:
        word = "a significant gain" if d["mean"] > 0 else "a significant loss"
        return f"{head}{detail}: {word} from pretraining."
    return f"{head}{detail}: no significant difference."


def table_markdown(settings: Sequence[Setting], summaries: dict[str, dict[str, Any]]) -> str:
    """The study as a Markdown table, accuracies and differences in percentage points.

    Parameters
    ----------
    settings : sequence of Setting
        Rows, in order.
    summaries : dict
        ``setting.key`` → :func:`paired_statistics`.
    """
    def pm(entry: dict[str, Any]) -> str:
        std = "–" if entry["std"] is None else f"{100 * entry['std']:.1f}"
        return f"{100 * entry['mean']:.1f} ± {std}"

    def num(value: float | None) -> str:
        return "–" if value is None else f"{value:.3g}"

    lines = ["| classes | first layer | labels/class | pretrained | random | "
             "difference [95 % CI] | paired t p | Wilcoxon p | pretrained wins |",
             "|---:|:---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in settings:
        row = summaries[s.key]
        d = row["difference"]
        ci = ("" if d["ci95"] is None
              else f" [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]")
        lines.append(f"| {s.classes} | {s.first_layer} | {s.labels_per_class} | "
                     f"{pm(row['pretrained'])} | {pm(row['random'])} | "
                     f"{100 * d['mean']:+.1f}{ci} | {num(d['p_t'])} | {num(d['p_wilcoxon'])} | "
                     f"{d['wins']}/{d['n']} |")
    return "\n".join(lines) + "\n"


def wilcoxon_notes(summaries: dict[str, dict[str, Any]]) -> list[str]:
    """The distinct notes on Wilcoxon p-values that cannot reach :data:`ALPHA` (few seeds).

    Parameters
    ----------
    summaries : dict
        Setting key → its summary (:func:`paired_statistics`).

    Returns
    -------
    list of str
    """
    notes = {row["difference"]["wilcoxon_note"] for row in summaries.values()}
    return sorted(n for n in notes if n)


@fill_doc
class RunStore:
    """Finished classifier runs, one JSON file in the run folder, rewritten atomically after
    every run so that ``--resume`` skips them.

    Parameters
    ----------
    path : pathlib.Path
        The JSON file.
    fingerprint : dict
        What the stored results depend on (the auto-encoder's training steps, the classifier's
        settings); a file written under another fingerprint is ignored.
    resume : bool
        Read the file's runs; without it the store starts empty.
    """

    def __init__(self, path: Path, fingerprint: dict[str, Any], *, resume: bool) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.runs: dict[str, dict[str, Any]] = {}
        if resume and path.exists():
            try:
                saved = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"--resume: {path} is damaged ({exc}); delete it to rerun "
                                 "the classifiers") from None
            if isinstance(saved, dict) and saved.get("fingerprint") == fingerprint:
                self.runs = dict(saved.get("runs", {}))

    @staticmethod
    def run_key(setting: Setting, seed_index: int) -> str:
        """The store's key of one run.

        Parameters
        ----------
        {setting_seed}

        Returns
        -------
        str
        """
        return f"{setting.key}/seed {seed_index}"

    def get(self, setting: Setting, seed_index: int) -> dict[str, Any] | None:
        """The stored result of one run, or ``None``.

        Parameters
        ----------
        {setting_seed}

        Returns
        -------
        dict or None
            ``{"pretrained": accuracy, "random": accuracy, ...}``.
        """
        return self.runs.get(self.run_key(setting, seed_index))

    def put(self, setting: Setting, seed_index: int, result: dict[str, Any]) -> None:
        """Record one run and rewrite the file.

        Parameters
        ----------
        {setting_seed}
        result : dict
            Both arms' accuracies (and whatever else the run reports), JSON-able.
        """
        self.runs[self.run_key(setting, seed_index)] = result
        write_json(self.path, {"fingerprint": self.fingerprint, "runs": self.runs})

    def accuracies(self, setting: Setting, n_seeds: int) -> dict[str, list[float]]:
        """Per-seed accuracies of both arms, seed order kept.

        Parameters
        ----------
        setting : Setting
            The setting.
        n_seeds : int
            Seeds to read (all must be stored).

        Returns
        -------
        dict of str to list of float
            Arm name → accuracies.
        """
        rows = [self.runs[self.run_key(setting, s)] for s in range(n_seeds)]
        return {arm: [float(row[arm]) for row in rows] for arm in ARMS}
