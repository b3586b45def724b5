"""latentebm: regularized latent-variable energy-based models.

``E(y, z) = ½‖y − Wz‖² + λR(z)`` and its relatives, inferred by minimising over ``z``.
"""

from .models import SparseCoding
from .objective import duality_gap, lasso_energy
from .operators import DenseDictionary, LinearOperator
from .regularizers import L1, NonNegL1, Regularizer
from .solvers import SolverResult, fista, ista

__version__ = "0.1.0"

__all__ = [
    "SparseCoding",
    "fista",
    "ista",
    "lasso_energy",
    "duality_gap",
    "SolverResult",
    "LinearOperator",
    "DenseDictionary",
    "Regularizer",
    "L1",
    "NonNegL1",
]
