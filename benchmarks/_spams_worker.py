"""SPAMS side of the benchmarks; runs under ``benchmarks/.venv-spams/bin/python`` (numpy<2).

A long-lived worker: it reads one JSON request per line on stdin and answers with one line
``@@RESULT {json}`` on stdout (SPAMS' own C++ output may appear on other lines). Arrays travel
as ``.npy`` files. Only the SPAMS call itself is inside the timed region; loading, layout
conversion (SPAMS wants column-major float64 with one signal per column) and writing the
results are outside it.

Requests (``op``):
  load     key, path, transpose      keep an array (as Fortran float64) under ``key``
  lasso    X, D, lambda1, out        spams.lasso, mode=2 (LARS-homotopy), codes -> out
  fista    X, D, lambda1, tol, max_it, it0, compute_gram, out
                                     spams.fistaFlat(loss='square', regul='l1'), codes -> out
  trainDL  X, D0, lambda1, batchsize, chunk, max_steps, marks, budget, out
                                     spams.trainDL resumed chunk by chunk until max_steps or
                                     budget seconds; dictionary snapshots when the training
                                     time crosses each mark -> out (n_snap, m, p), with times
  quit
"""

from __future__ import annotations

import json
import sys
import time
import warnings

import numpy as np

# SPAMS 2.6.5.4's trainDL still uses the alias ``np.bool`` that NumPy 1.24-1.26 removed; give
# it back (it is the same as ``np.bool_``). Without this, trainDL raises AttributeError.
warnings.simplefilter("ignore", FutureWarning)
if "bool" not in np.__dict__:
    np.bool = np.bool_

import spams  # noqa: E402

ARRAYS: dict[str, np.ndarray] = {}


def reply(obj) -> None:
    sys.stdout.write("@@RESULT " + json.dumps(obj) + "\n")
    sys.stdout.flush()


def op_load(req):
    a = np.load(req["path"])
    if req.get("transpose"):
        a = a.T
    ARRAYS[req["key"]] = np.asfortranarray(a, dtype=np.float64)
    return {"shape": list(ARRAYS[req["key"]].shape)}


def op_lasso(req):
    X, D = ARRAYS[req["X"]], ARRAYS[req["D"]]
    t0 = time.perf_counter()
    A = spams.lasso(X, D=D, lambda1=float(req["lambda1"]), mode=2, numThreads=int(req["threads"]))
    seconds = time.perf_counter() - t0
    np.save(req["out"], np.ascontiguousarray(A.toarray().T))
    return {"seconds": seconds}


def op_fista(req):
    X, D = ARRAYS[req["X"]], ARRAYS[req["D"]]
    W0 = np.zeros((D.shape[1], X.shape[1]), dtype=np.float64, order="F")
    t0 = time.perf_counter()
    W, info = spams.fistaFlat(
        X,
        D,
        W0,
        return_optim_info=True,
        loss="square",
        regul="l1",
        lambda1=float(req["lambda1"]),
        tol=float(req["tol"]),
        max_it=int(req["max_it"]),
        it0=int(req["it0"]),
        compute_gram=bool(req.get("compute_gram", False)),
        numThreads=int(req["threads"]),
        verbose=False,
    )
    seconds = time.perf_counter() - t0
    np.save(req["out"], np.ascontiguousarray(W.T))
    info = np.asarray(info)
    return {"seconds": seconds, "optim_info": info.ravel()[:8].tolist()}


def op_traindl(req):
    """Online dictionary learning in chunks of ``chunk`` minibatches until ``max_steps`` or
    ``budget`` seconds of (timed) training; a snapshot whenever the time crosses a mark."""
    X, D = ARRAYS[req["X"]], ARRAYS[req["D0"]].copy(order="F")
    n = X.shape[1]
    bs, chunk, max_steps = int(req["batchsize"]), int(req["chunk"]), int(req["max_steps"])
    marks = [float(m) for m in req["marks"]]
    budget = float(req["budget"])
    snaps, times, steps = [], [], []
    # Untimed warm-up (thread pool, first-call allocations) on one minibatch and a copy of D.
    spams.trainDL(
        np.asfortranarray(X[:, :bs]),
        D=D.copy(order="F"),
        lambda1=float(req["lambda1"]),
        iter=1,
        batchsize=bs,
        numThreads=int(req["threads"]),
        verbose=False,
    )
    model = None
    total, a = 0.0, 0
    while a < max_steps and total < budget:
        b = min(a + chunk, max_steps)
        cols = np.arange(a * bs, b * bs) % n  # the same sample stream as the other contenders
        Xc = np.asfortranarray(X[:, cols])
        t0 = time.perf_counter()
        D, model = spams.trainDL(
            Xc,
            return_model=True,
            model=model,
            D=D,
            lambda1=float(req["lambda1"]),
            iter=b - a,
            batchsize=bs,
            numThreads=int(req["threads"]),
            verbose=False,
        )
        total += time.perf_counter() - t0
        D = np.asfortranarray(D)
        a = b
        if (marks and total >= marks[0]) or a >= max_steps or total >= budget:
            snaps.append(D.copy())
            times.append(total)
            steps.append(a)
            while marks and total >= marks[0]:
                marks.pop(0)
    np.save(req["out"], np.stack(snaps))
    return {"seconds": times, "steps": steps, "final_iter": int(model["iter"]) if model else 0}


OPS = {"load": op_load, "lasso": op_lasso, "fista": op_fista, "trainDL": op_traindl}


def main() -> None:
    import importlib.metadata

    reply({"ready": True, "spams": importlib.metadata.version("spams"), "numpy": np.__version__})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        req = json.loads(line)
        if req["op"] == "quit":
            reply({"bye": True})
            return
        try:
            reply({"ok": True, **OPS[req["op"]](req)})
        except Exception as exc:  # noqa: BLE001 - report every failure to the parent
            reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    main()
