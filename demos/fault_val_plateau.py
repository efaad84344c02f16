"""Fault (val_loss_stagnating): a model that has learned what it can; validation loss stays flat for many epochs."""

from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args(epochs=30)
train, val = loaders(*blobs(n=1024, spread=4.0))
model = mlp(hidden=16, depth=1)
fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.05), train, val, a.epochs)
