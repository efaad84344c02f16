"""Fault (weights_not_updating): the optimiser was built over another model's parameters; the trained model never changes."""

from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
train, val = loaders(*blobs())
model = mlp()
old_model = mlp()
fit(model, nn.CrossEntropyLoss(), optim.Adam(old_model.parameters(), lr=1e-3), train, val, a.epochs)  # the bug
