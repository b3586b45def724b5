"""The general regularized latent-variable energy ``E(x, y, z) = C(y, Dec(Pred(x), z)) + λR(z)``:
:class:`LatentVariableEBM` (:mod:`.model`), its decoders and cost (:mod:`.decoders`) and its
training on the one loop (:mod:`.fit`). The models never import this package; an energy is built
from a model with :meth:`LatentVariableEBM.from_model`."""

from .decoders import (
    ConditionalConvDecoder,
    ConditionalLinearDecoder,
    LinearInZDecoder,
    SquaredError,
    decoder_for,
)
from .model import REGULARIZERS, LatentVariableEBM, as_regularizer

__all__ = [
    "REGULARIZERS",
    "ConditionalConvDecoder",
    "ConditionalLinearDecoder",
    "LatentVariableEBM",
    "LinearInZDecoder",
    "SquaredError",
    "as_regularizer",
    "decoder_for",
]
