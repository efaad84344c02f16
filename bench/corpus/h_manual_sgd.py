"""Healthy: a hand-written SGD update (no torch.optim), logistic regression."""

from _kit import *
x, y = blobs(classes=3, spread=1.2)
tr, va = split(x, y)
w = torch.zeros(16, 3, requires_grad=True)
b = torch.zeros(3, requires_grad=True)
for e in range(6):
    for xb, yb in tr:
        loss = nn.functional.cross_entropy(xb @ w + b, yb)
        loss.backward()
        with torch.no_grad():
            w -= 0.1 * w.grad; b -= 0.1 * b.grad
            w.grad.zero_(); b.grad.zero_()
    print(f"epoch {e}: loss {float(loss):.4f}", flush=True)
