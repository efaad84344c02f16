"""Fault (weights_not_updating): the output layer is replaced after the optimiser was built; the optimiser still holds the old one, so the new head never moves while the rest trains."""

from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
train, val = loaders(*blobs())
model = mlp()
optimizer = optim.Adam(model.parameters(), lr=1e-3)
model[-1] = nn.Linear(64, 4)  # the bug: a new head, not in the optimiser
fit(model, nn.CrossEntropyLoss(), optimizer, train, val, a.epochs)
