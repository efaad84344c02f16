"""Fault (vanishing_gradients): an 12-layer tanh MLP initialised at std 0.02."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = mlp(depth=12, act=nn.Tanh, hidden=32)
for l in m:
    if isinstance(l, nn.Linear):
        nn.init.normal_(l.weight, std=0.02); nn.init.zeros_(l.bias)
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 1e-4), tr, va, 5)
