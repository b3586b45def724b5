"""Faults: a run killed (SIGKILL) or interrupted (SIGINT) mid-training resumes to the same result
as an uninterrupted run, bit for bit; a full disk while writing a checkpoint leaves the previous
one intact and says so."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

import latentebm as le
from latentebm.training import checkpoint as checkpoint_module

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import latentebm as le
    ckpt, out, kill_at, how = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    Y = np.random.default_rng(0).standard_normal((96, 12))

    def fault(step, model):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL if how == "kill" else signal.SIGINT)

    model = le.SparseCoding(n_features=12, n_atoms=10, lam=0.2, seed=3)
    try:
        model.fit(Y, epochs=3, batch_size=16, checkpoint=ckpt, checkpoint_every=2, resume=True,
                  progress=False, callback=fault if kill_at > 0 else None)
    except KeyboardInterrupt:
        sys.exit(130)
    np.save(out, model.dictionary())
""")


def run(tmp_path: Path, name: str, kill_at: int, how: str = "kill") -> subprocess.CompletedProcess:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path / f"{name}.safetensors"),
         str(tmp_path / f"{name}.npy"), str(kill_at), how],
        capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("how, code", [("kill", -signal.SIGKILL), ("int", 130)])
def test_interrupted_run_resumes_bit_identically(tmp_path, how, code):
    import numpy as np

    reference = run(tmp_path, "reference", 0)
    assert reference.returncode == 0, reference.stderr
    faulty = run(tmp_path, "faulty", 7, how)
    assert faulty.returncode == code, faulty.stderr
    assert (tmp_path / "faulty.safetensors").exists() and not (tmp_path / "faulty.npy").exists()
    resumed = run(tmp_path, "faulty", 0)
    assert resumed.returncode == 0, resumed.stderr
    assert np.array_equal(np.load(tmp_path / "reference.npy"), np.load(tmp_path / "faulty.npy"))


def test_full_disk_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch):
    import numpy as np

    Y = np.random.default_rng(1).standard_normal((64, 12))
    ckpt = tmp_path / "sc.safetensors"
    model = le.SparseCoding(n_features=12, n_atoms=10, lam=0.2, seed=0)
    model.fit(Y, epochs=1, batch_size=16, checkpoint=ckpt, progress=False)
    before = ckpt.read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def no_space_in_rust(*args, **kwargs):  # what safetensors raises on a full disk
        raise SafetensorError("Error while serializing: I/O error: No space left on device "
                              "(os error 28)")

    for failure in (no_space, no_space_in_rust):
        monkeypatch.setattr(checkpoint_module, "save_file", failure)
        with pytest.raises(OSError, match=r"could not write checkpoint .*sc\.safetensors.*"
                                          r"No space left on device.*intact"):
            model.fit(Y, epochs=2, batch_size=16, checkpoint=ckpt, resume=True, progress=False)
        assert ckpt.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    again = le.SparseCoding(n_features=12, n_atoms=10, lam=0.2, seed=0)
    again.fit(Y, epochs=2, batch_size=16, checkpoint=ckpt, resume=True, progress=False)
    assert torch.isfinite(torch.as_tensor(again.dictionary())).all()
