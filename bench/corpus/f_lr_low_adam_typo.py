"""Fault (lr_too_low): Adam with lr=1e-7 (a typo for 1e-3)."""

from _kit import *
x, y = sequences()
tr, va = split(x, y)
m = SeqClassifier("gru")
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 1e-7), tr, va, 5)
