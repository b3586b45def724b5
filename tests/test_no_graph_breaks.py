"""``forward`` never validates and never synchronises with the host: ``torch._dynamo.explain``
finds no graph break in the forward pass of LISTA (every variant), PSD's encoders, the
convolutional auto-encoder and the VAE."""

from __future__ import annotations

import pytest
import torch

import latentebm as le

dynamo = pytest.importorskip("torch._dynamo")


def graph_breaks(module: torch.nn.Module, *args, **kwargs) -> int:
    dynamo.reset()
    return dynamo.explain(module)(*args, **kwargs).graph_break_count


def dictionary(n_features: int = 12, n_atoms: int = 16) -> torch.Tensor:
    W = torch.randn(n_features, n_atoms, generator=torch.Generator().manual_seed(0))
    return W / W.norm(dim=0)


@pytest.mark.parametrize("variant", ["lista", "cp", "step"])
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("support", [0.0, 0.2])
def test_lista_forward_has_no_graph_break(variant, tied, support):
    model = le.LISTA(dictionary(), 0.1, 3, variant=variant, tied=tied, support=support)
    assert graph_breaks(model, torch.randn(5, 12)) == 0


@pytest.mark.parametrize("encoder", ["tanh", "lista"])
def test_psd_encoder_has_no_graph_break(encoder):
    model = le.PSD(12, 16, 0.1, encoder=encoder, n_steps=2)
    assert graph_breaks(model, torch.randn(5, 12)) == 0
    assert graph_breaks(model.encoder, torch.randn(5, 12)) == 0


@pytest.mark.parametrize("nonlinearity", ["tanh", "shrink"])
@pytest.mark.parametrize("boundary", ["full", "circular"])
def test_conv_autoencoder_forward_has_no_graph_break(nonlinearity, boundary):
    model = le.ConvSparseAutoencoder(4, 3, 1, nonlinearity=nonlinearity, boundary=boundary)
    assert graph_breaks(model, torch.randn(2, 1, 10, 10)) == 0


@pytest.mark.parametrize("encoder", ["mlp", "linear"])
def test_vae_forward_has_no_graph_break(encoder):
    model = le.VAE(16, 2, encoder=encoder, hidden=(8,))
    assert graph_breaks(model, torch.rand(4, 16), beta=0.5) == 0


@pytest.mark.parametrize("boundary", ["full", "circular"])
def test_conv_autoencoder_training_terms_have_no_graph_break(boundary):
    """What ``fit`` differentiates at every step (through DDP): the decoder's reconstruction
    builds its operator from the live kernels without checking them again."""
    from latentebm.models.conv_autoencoder import _TrainingTerms

    model = le.ConvSparseAutoencoder(4, 3, 1, boundary=boundary)
    images = torch.randn(2, 1, 10, 10)
    codes = model.predict(images).detach()
    assert graph_breaks(_TrainingTerms(model), images, codes) == 0


@pytest.mark.parametrize("source", ["dense", "conv"])
def test_latent_variable_ebm_forward_has_no_graph_break(source):
    if source == "dense":
        model = le.SparseCoding(8, 12, 0.1, init="random")
        y, z = torch.randn(2, 8), torch.randn(2, 12)
    else:
        model = le.ConvDictionaryLearning(3, 3, 1, init="random")
        y, z = torch.randn(2, 1, 8, 8), torch.randn(2, 3, 10, 10)
    assert graph_breaks(le.LatentVariableEBM.from_model(model), None, y, z) == 0
