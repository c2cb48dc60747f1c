"""Per-call time of small calls (issue 13, "tiny calls"): microseconds per call, the best of 5
loops of 20,000 calls (time.perf_counter), for the pointwise and pair losses on 128 float32
elements (loss only and with return_grad=True; "mean", "sum", "none"), cross_entropy and
nll_loss on (32, 10) float32 logits with int64 targets, and logsumexp / softmax / log_softmax
on (32, 10) along the last axis.

    PYTHONPATH=python python bench/tiny_calls.py [--threads 1] [--calls 20000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import fastloss as fl


def cases():
    rng = np.random.default_rng(0)
    n = 128
    x = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    prob = rng.random(n).astype(np.float32)
    pm1 = np.where(rng.random(n) > 0.5, 1.0, -1.0).astype(np.float32)
    pos = (rng.random(n) + 0.5).astype(np.float32)
    logp = np.log(rng.dirichlet(np.ones(n))).astype(np.float32)
    p = rng.dirichlet(np.ones(n)).astype(np.float32)
    x2 = rng.standard_normal(n).astype(np.float32)
    pw = {  # name: (function, args, options)
        "mse_loss": (fl.mse_loss, (x, y), {}),
        "l1_loss": (fl.l1_loss, (x, y), {}),
        "huber_loss": (fl.huber_loss, (x, y), {}),
        "smooth_l1_loss": (fl.smooth_l1_loss, (x, y), {}),
        "binary_cross_entropy_with_logits": (fl.binary_cross_entropy_with_logits, (x, prob), {}),
        "binary_cross_entropy": (fl.binary_cross_entropy, (prob, prob), {}),
        "sigmoid_focal_loss": (fl.sigmoid_focal_loss, (x, prob), {}),
        "hinge_loss": (fl.hinge_loss, (x, pm1), {}),
        "kl_div": (fl.kl_div, (logp, p), {}),
        "poisson_nll_loss": (fl.poisson_nll_loss, (x, pos), {}),
        "gaussian_nll_loss": (fl.gaussian_nll_loss, (x, y, pos), {}),
        "margin_ranking_loss": (fl.margin_ranking_loss, (x, x2, pm1), {}),
        "hinge_embedding_loss": (fl.hinge_embedding_loss, (pos, pm1), {}),
        "soft_margin_loss": (fl.soft_margin_loss, (x, pm1), {}),
        "log_cosh_loss": (fl.log_cosh_loss, (x, y), {}),
        "generalized_kl_div": (fl.generalized_kl_div, (x.reshape(8, 16), pos.reshape(8, 16)), {}),
    }
    out = {}
    for name, (f, args, kw) in pw.items():
        for red in ("mean", "sum", "none"):
            for grad in (False, True):
                out[f"{name} {red}{' grad' if grad else ''}"] = (
                    f, args, dict(kw, reduction=red, return_grad=grad))
    logits = rng.normal(0, 3, (32, 10)).astype(np.float32)
    t = rng.integers(0, 10, 32)
    lp = fl.log_softmax(logits, axis=-1)
    for red in ("mean", "sum", "none"):
        for grad in (False, True):
            sfx = f" {red}{' grad' if grad else ''}"
            out["cross_entropy (32,10)" + sfx] = (fl.cross_entropy, (logits, t),
                                                  dict(reduction=red, return_grad=grad))
            out["nll_loss (32,10)" + sfx] = (fl.nll_loss, (lp, t),
                                             dict(reduction=red, return_grad=grad))
    out["logsumexp (32,10) axis=-1"] = (fl.logsumexp, (logits,), dict(axis=-1))
    out["softmax (32,10) axis=-1"] = (fl.softmax, (logits,), dict(axis=-1))
    out["log_softmax (32,10) axis=-1"] = (fl.log_softmax, (logits,), dict(axis=-1))
    return out


def time_call(f, args, kw, calls: int, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(calls):
            f(*args, **kw)
        best = min(best, time.perf_counter() - t0)
    return best / calls * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--only", default=None, help="substring of the case names to run")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if a.threads is not None:
        fl.set_num_threads(a.threads)
    res = {}
    for name, (f, args, kw) in cases().items():
        if a.only and a.only not in name:
            continue
        res[name] = time_call(f, args, kw, a.calls)
        print(f"{name:55s} {res[name]:7.2f} us", flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
