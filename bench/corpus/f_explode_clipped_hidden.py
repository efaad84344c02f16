"""Fault (exploding_gradients): the same oversized init (6x) in an 8-layer tanh MLP, hidden by clip_grad_norm_(…, 1.0): the clipped norm reads 1.0, the norm before clipping is large."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = mlp(depth=8, act=nn.Tanh)
with torch.no_grad():
    for l in m:
        if isinstance(l, nn.Linear):
            l.weight.mul_(6.0)
fit(m, nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), 1e-2), tr, va, 5, clip=1.0)
