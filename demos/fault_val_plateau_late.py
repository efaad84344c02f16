"""Fault (val_loss_stagnating): Adam learns what there is to learn in three epochs, then trains on for 27 more: validation loss goes nowhere."""

from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args(epochs=30)
train, val = loaders(*blobs(n=1024, spread=3.0))
model = mlp(hidden=32, depth=1)
fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=3e-3), train, val, a.epochs)
