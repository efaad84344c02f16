"""Fault (weights_not_updating): the head is replaced after the optimizer was built: the new head never moves."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = mlp()
opt = torch.optim.Adam(m.parameters(), 1e-3)
m[-1] = nn.Linear(64, 4)
fit(m, nn.CrossEntropyLoss(), opt, tr, va, 4)
