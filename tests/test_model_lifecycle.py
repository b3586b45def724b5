"""What a PyTorch user does to a model around ``fit``: precision changes, gradient modes,
frozen parameters, train/eval mode and the global default dtype."""

from __future__ import annotations

import pytest
import torch

import latentebm as le

GEN = torch.Generator().manual_seed(0)
W = torch.randn(8, 12, generator=GEN)
W /= W.norm(dim=0)
Y = torch.rand(64, 8, generator=GEN)
IMAGES = torch.rand(4, 1, 10, 10, generator=GEN)

MODELS = {
    "SparseCoding": lambda: le.SparseCoding(8, 12, 0.1, init="random"),
    "LISTA": lambda: le.LISTA(W, 0.05, 3),
    "PSD": lambda: le.PSD(8, 12, 0.05),
    "VAE": lambda: le.VAE(8, 2, hidden=(6,)),
    "ConvSparseAutoencoder": lambda: le.ConvSparseAutoencoder(2, 3, 1),
    "ConvDictionaryLearning": lambda: le.ConvDictionaryLearning(2, 3, 1),
}
TRAINED_BY_AUTOGRAD = {
    "LISTA": (Y, {"batch_size": 16}),
    "PSD": (Y, {"batch_size": 16}),
    "VAE": (Y, {}),
    "ConvSparseAutoencoder": (IMAGES, {"batch_size": 2}),
}


def tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's parameters and buffers."""
    return {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("conversion", ["half", "bfloat16"])
def test_a_precision_the_models_do_not_run_in_is_refused_before_converting(name, conversion):
    model = MODELS[name]()
    before = tensors(model)
    with pytest.raises(TypeError, match="runs in float32 or float64"):
        getattr(model, conversion)()
    assert same(before, tensors(model))
    assert model.double().dtype == torch.float64 and model.config.dtype == "float64"


@pytest.mark.parametrize("name", sorted(TRAINED_BY_AUTOGRAD))
def test_fit_trains_under_no_grad_and_refuses_inference_mode_and_frozen_models(name):
    data, kwargs = TRAINED_BY_AUTOGRAD[name]
    model = MODELS[name]()
    start = tensors(model)
    with torch.no_grad():
        model.fit(data, epochs=1, progress=False, **kwargs)
    assert not same(start, tensors(model))
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        model.fit(data, epochs=1, progress=False, **kwargs)
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad=False"):
        model.fit(data, epochs=1, progress=False, **kwargs)


@pytest.mark.parametrize("mode", [True, False])
def test_vae_fit_leaves_the_mode_the_caller_set(mode):
    model = le.VAE(8, 2, hidden=(6,)).train(mode)
    model.fit(Y, epochs=1, progress=False)
    assert model.training is mode


def test_vae_weights_do_not_depend_on_the_global_default_dtype():
    reference = le.VAE(8, 2, hidden=(6,))
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        other = le.VAE(8, 2, hidden=(6,))
    finally:
        torch.set_default_dtype(default)
    assert other.dtype == torch.float32
    for a, b in zip(reference.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)


def test_lista_fit_without_the_head_keeps_a_parameter_the_caller_froze():
    model = le.LISTA(W, 0.05, 5, variant="hybrid", head=2)
    model.theta.requires_grad_(False)
    model.fit(Y, epochs=1, batch_size=16, progress=False, train_head=False)
    assert not model.theta.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "theta")
