"""Test-session settings: one torch thread per worker (pytest-xdist runs workers in parallel)."""

import matplotlib
import torch

matplotlib.use("Agg")
torch.set_num_threads(1)


def pytest_addoption(parser):
    """``--device cuda`` runs the suite with that default torch device (``make gpu-check``)."""
    parser.addoption("--device", default="cpu",
                     help="default torch device for the test session (cpu, cuda, cuda:1 ...)")


def pytest_configure(config):
    device = config.getoption("--device")
    if device != "cpu":
        torch.set_default_device(device)
