"""Healthy: a two-layer LSTM classifier."""

from _kit import *
x, y = sequences()
tr, va = split(x, y)
m = SeqClassifier("lstm", num_layers=2)
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 5e-3), tr, va, 6)
