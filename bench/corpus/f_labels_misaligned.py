"""Fault (accuracy_stuck): the label tensor was sorted separately from the inputs: pairs no longer match."""

from _kit import *
x, y = blobs()
y, _ = torch.sort(y[torch.randperm(len(y), generator=gen(3))])
tr, va = split(x, y)
m = mlp()
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 1e-3), tr, va, 5)
