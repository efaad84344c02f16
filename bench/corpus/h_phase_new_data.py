"""Healthy: train on one data set, then continue with the same optimizer on a harder, shifted one."""

from _kit import *
x, y = blobs(spread=1.0)
tr, va = split(x, y)
m = mlp()
opt = torch.optim.Adam(m.parameters(), 2e-3)
fit(m, nn.CrossEntropyLoss(), opt, tr, va, 4, label="easy ")
x2, y2 = blobs(spread=2.2, seed=0, n=2048)
tr2, va2 = split(x2 + 0.5, y2)
fit(m, nn.CrossEntropyLoss(), opt, tr2, va2, 5, label="hard ")
