"""Why cross-entropy beats MSE on softmax outputs: look at the gradients on the logits.

With p = softmax(z) and a one-hot target y, the cross-entropy gradient on the logits is
simply p - y: on the true class it is p_c - 1, which tends to -1 when the model is
confidently wrong (p_c -> 0), so learning is fastest exactly when it is most needed.
The squared error sum_i (p_i - y_i)^2 must be pulled back through the softmax Jacobian
J = diag(p) - p p^T, and its true-class entry carries a factor p_c (roughly p_c (1 - p_c)
times the error): when p_c -> 0 that gradient vanishes and the model barely moves.
The log in cross-entropy cancels this factor exactly, which is the whole lesson.

Run it: ``python examples/gradient_shapes.py``.
"""

from __future__ import annotations

import numpy as np

import fastloss as fl


def ce_grad(p, y) -> np.ndarray:
    """Gradient of the summed cross-entropy with respect to the logits z = log(p) (= p - y),
    computed by fastloss."""
    logits = np.log(np.asarray(p, dtype=np.float64))
    target = int(np.argmax(y))  # y is one-hot: its class index
    _, grad = fl.cross_entropy(logits, target, reduction="sum", return_grad=True)
    return np.asarray(grad)


def mse_softmax_grad(p, y) -> np.ndarray:
    """Exact gradient of the sum of squared errors sum_i (softmax(z)_i - y_i)^2 with respect
    to the logits z = log(p), through the FULL softmax Jacobian J = diag(p) - p p^T."""
    p = fl.softmax(np.log(np.asarray(p, dtype=np.float64)))  # softmax(log p) = p
    y = np.asarray(y, dtype=np.float64)
    jac = np.diag(p) - np.outer(p, p)  # J[i, j] = dp_i / dz_j
    return jac.T @ (2.0 * (p - y))


def sweep(pcs, n_classes: int = 3):
    """Rows (p_c, CE grad on the true logit, MSE grad on the true logit) for true-class
    probabilities p_c, the remaining mass split evenly over the other classes."""
    y = np.zeros(n_classes)
    y[0] = 1.0
    rows = []
    for pc in pcs:
        p = np.full(n_classes, (1.0 - pc) / (n_classes - 1))
        p[0] = pc
        rows.append((float(pc), float(ce_grad(p, y)[0]), float(mse_softmax_grad(p, y)[0])))
    return rows


def main() -> None:
    y = np.array([1.0, 0.0, 0.0])
    p = np.array([0.2, 0.5, 0.3])
    fmt = lambda v: "[" + ", ".join(f"{x:+.4f}" for x in v) + "]"  # noqa: E731
    print("y = [1, 0, 0], p = softmax(z) = [0.2, 0.5, 0.3]  (logits z = log p)")
    print("MSE here is the SUM of squared errors, sum_i (p_i - y_i)^2 (not the mean).")
    print(f"  cross-entropy  dL/dz = p - y        : {fmt(ce_grad(p, y))}")
    print(f"  MSE (sum)      dL/dz = J^T 2 (p - y): {fmt(mse_softmax_grad(p, y))}")
    print("  (J = diag(p) - p p^T, the full softmax Jacobian)")
    print()
    print("Gradient on the true-class logit as the model gets confidently wrong (p_c -> 0):")
    print(f"  {'p_c':>8}  {'cross-entropy':>14}  {'MSE (sum)':>14}")
    for pc, ce, mse in sweep([0.5, 0.1, 0.01, 0.001, 1e-4]):
        print(f"  {pc:>8g}  {ce:>14.6f}  {mse:>14.6g}")
    print("Cross-entropy's gradient tends to -1; the MSE one vanishes (about -3 p_c here).")


if __name__ == "__main__":
    main()
