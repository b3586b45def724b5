"""Test-session settings: one torch thread per worker (pytest-xdist runs workers in parallel)."""

import matplotlib
import torch

matplotlib.use("Agg")
torch.set_num_threads(1)
