"""Fault (exploding_gradients): an 8-layer tanh MLP whose hand-rolled init is 6x the default's: gradients grow layer by layer toward the input."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = mlp(depth=8, act=nn.Tanh)
with torch.no_grad():
    for l in m:
        if isinstance(l, nn.Linear):
            l.weight.mul_(6.0)
fit(m, nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), 1e-2), tr, va, 5)
