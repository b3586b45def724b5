"""Quantitative descriptions of learned atoms and filters (see :mod:`.atoms`)."""

from .atoms import (
    GOOD_GABOR_R2,
    LOCALIZED_THRESHOLD,
    DoGFit,
    GaborFit,
    centre_surround_score,
    fit_dog,
    fit_gabor,
    fit_gabors,
    gabor_summary,
    localization_score,
    localization_summary,
    orientation_spread,
)

__all__ = [
    "GOOD_GABOR_R2",
    "LOCALIZED_THRESHOLD",
    "DoGFit",
    "GaborFit",
    "centre_surround_score",
    "fit_dog",
    "fit_gabor",
    "fit_gabors",
    "gabor_summary",
    "localization_score",
    "localization_summary",
    "orientation_spread",
]
