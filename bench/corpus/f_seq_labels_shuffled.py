"""Fault (accuracy_stuck): an LSTM on sequences whose labels were shuffled by a bad join."""

from _kit import *
x, y = sequences()
y = y[torch.randperm(len(y), generator=gen(4))]
tr, va = split(x, y)
m = SeqClassifier("lstm")
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 3e-3), tr, va, 5)
