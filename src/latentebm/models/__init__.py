"""Models: each owns its parameters and composes operators, regularizers and solvers."""

from .sparse_coding import SparseCoding

__all__ = ["SparseCoding"]
