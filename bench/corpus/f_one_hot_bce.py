"""Fault (label_issue): one-hot labels of 4 exclusive classes trained with BCEWithLogitsLoss."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = mlp()
fit(m, nn.BCEWithLogitsLoss(), torch.optim.Adam(m.parameters(), 1e-3), tr, va, 4,
    target=lambda t: nn.functional.one_hot(t, 4).float(), classify=False)
