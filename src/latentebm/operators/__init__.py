"""Linear decoders ``y = A z`` shared by the solvers."""

from .base import LinearOperator, batch_dot, per_sample
from .dense import DenseDictionary

__all__ = ["LinearOperator", "DenseDictionary", "batch_dot", "per_sample"]
