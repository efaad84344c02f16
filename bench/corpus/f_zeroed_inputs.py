"""Fault (no_input_variance): a mask bug multiplies every input by 0."""

from _kit import *
x, y = blobs()
tr, va = split(x * 0, y)
m = mlp()
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 1e-3), tr, va, 4)
