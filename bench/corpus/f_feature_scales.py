"""Fault (unnormalized_input): tabular features in their raw units: one column is an income in the 10^5 range, the rest are standardised."""

from _kit import *
x, y = blobs()
x[:, 0] = x[:, 0] * 30000 + 60000
tr, va = split(x, y)
m = mlp()
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 1e-3), tr, va, 4)
