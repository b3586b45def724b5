"""latentebm: regularized latent-variable energy-based models.

``E(y, z) = ½‖y − Wz‖² + λR(z)`` and its relatives, inferred by minimising over ``z``.
"""

from importlib import metadata as _metadata

from .allocator import keep_large_allocations
from .energy import (
    ConditionalConvDecoder,
    ConditionalLinearDecoder,
    LatentVariableEBM,
    LinearInZDecoder,
    SquaredError,
)
from .models import SparseCoding
from .models.conv_autoencoder import ConvSparseAutoencoder
from .models.conv_dictionary_learning import ConvDictionaryLearning
from .models.lista import LISTA
from .models.psd import PSD
from .models.vae import VAE
from .objective import duality_gap, lasso_energy
from .operators import ConvDictionary, DenseDictionary, LinearOperator
from .regularizers import L1, NonNegL1, Regularizer, UnitBall
from .solvers import IterationState, NotConvergedWarning, SolverResult, fista, ista, solve

try:
    __version__ = _metadata.version("latentebm")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "LatentVariableEBM",
    "ConditionalLinearDecoder",
    "ConditionalConvDecoder",
    "LinearInZDecoder",
    "SquaredError",
    "SparseCoding",
    "VAE",
    "LISTA",
    "PSD",
    "solve",
    "fista",
    "ista",
    "lasso_energy",
    "duality_gap",
    "SolverResult",
    "NotConvergedWarning",
    "IterationState",
    "LinearOperator",
    "DenseDictionary",
    "ConvDictionary",
    "ConvDictionaryLearning",
    "ConvSparseAutoencoder",
    "Regularizer",
    "L1",
    "NonNegL1",
    "UnitBall",
    "keep_large_allocations",
]
