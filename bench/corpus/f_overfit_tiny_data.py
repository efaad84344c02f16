"""Fault (overfitting): 150 noisy training samples, a wide MLP, 40 epochs."""

from _kit import *
x, y = blobs(n=500, spread=3.0)
tr, va = split(x, y, val=0.7, batch=32)
m = mlp(hidden=256)
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 3e-3), tr, va, 40)
