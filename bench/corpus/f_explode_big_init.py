"""Fault (exploding_gradients): a 6-layer MLP with weights initialised at std 1.5 (10x too large): gradients grow toward the input."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = mlp(depth=6)
for l in m:
    if isinstance(l, nn.Linear):
        nn.init.normal_(l.weight, std=1.5)
fit(m, nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), 1e-3), tr, va, 5)
