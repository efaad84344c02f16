"""Fault (lr_too_high): Adam at lr 0.5 (500x the usual 1e-3)."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = mlp()
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 0.5), tr, va, 5)
