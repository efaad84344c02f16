"""Fault (weights_not_updating): optimizer.step() is never called; gradients are computed and thrown away."""

from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
train, val = loaders(*blobs())
model = mlp()
fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-3), train, val, a.epochs, step=False)
