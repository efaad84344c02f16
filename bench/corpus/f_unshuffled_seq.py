"""Fault (unshuffled_data): sequences stored class by class, loaded in order."""

from _kit import *
x, y = sequences()
o = torch.argsort(y)
tr, va = split(x[o], y[o], shuffle=False, val=0.1)
m = SeqClassifier("gru")
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 3e-3), tr, va, 4)
