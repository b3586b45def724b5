"""Linear decoders ``y = A z`` shared by the solvers."""

from .base import LinearOperator, batch_dot, per_sample, unit_norm
from .conv import ConvDictionary
from .dense import GRAM_MAX_ATOMS, DenseDictionary

__all__ = ["LinearOperator", "DenseDictionary", "ConvDictionary", "batch_dot", "per_sample",
           "unit_norm", "GRAM_MAX_ATOMS"]
