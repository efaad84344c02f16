"""Healthy: softmax regression in plain NumPy on three synthetic blobs, logged with the explicit API.

Needs no deep-learning framework: it shows the two lines that monitor any training loop.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import accmon.probe as accmon


def make_data(rng: np.random.Generator, centers: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, len(centers), size=n)
    x = centers[y] + rng.normal(0, 1.0, size=(n, 2))
    return x.astype(np.float32), y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--delay", type=float, default=0.02, help="seconds per step, so the live view can follow")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    centers = rng.normal(0, 2.5, size=(3, 2))
    x, y = make_data(rng, centers, 3000)
    x_val, y_val = make_data(rng, centers, 600)
    w = np.zeros((2, 3), dtype=np.float32)
    b = np.zeros(3, dtype=np.float32)
    lr, batch = 0.1, 64
    run = accmon.start("numpy-softmax")
    run.set_facts(framework="api", task="multiclass", num_classes=3, loss={"kind": "CrossEntropyLoss"})
    step = 0
    for epoch in range(args.epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            logits = x[idx] @ w + b
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            loss = float(-np.log(p[np.arange(len(idx)), y[idx]] + 1e-12).mean())
            acc = float((p.argmax(1) == y[idx]).mean())
            grad = p
            grad[np.arange(len(idx)), y[idx]] -= 1
            grad /= len(idx)
            gw, gb = x[idx].T @ grad, grad.sum(0)
            w -= lr * gw
            b -= lr * gb
            accmon.log(step, loss=loss, acc=acc, lr=lr, epoch=epoch, grad_norm=float(np.sqrt((gw**2).sum() + (gb**2).sum())))
            step += 1
            time.sleep(args.delay)
        logits = x_val @ w + b
        val_acc = float((logits.argmax(1) == y_val).mean())
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        val_loss = float(-np.log(p[np.arange(len(y_val)), y_val] + 1e-12).mean())
        accmon.log(step - 1, val_loss=val_loss, val_acc=val_acc)
        print(f"epoch {epoch}: loss {loss:.3f} acc {acc:.2f} val_acc {val_acc:.2f}", flush=True)


if __name__ == "__main__":
    main()
