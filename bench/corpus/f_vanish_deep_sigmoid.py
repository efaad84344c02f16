"""Fault (vanishing_gradients): a 10-layer sigmoid MLP with small initial weights: gradients vanish toward the input."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = mlp(depth=10, act=nn.Sigmoid, hidden=32)
for l in m:
    if isinstance(l, nn.Linear):
        nn.init.normal_(l.weight, std=0.05)
fit(m, nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), 0.05), tr, va, 5)
