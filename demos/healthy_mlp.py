"""Healthy: a 20-64-64-4 MLP on Gaussian blobs, Adam, cross-entropy. No alert should fire."""

from torch import nn, optim

from _common import args, blobs, fit, loaders, mlp

a = args()
train, val = loaders(*blobs())
model = mlp()
fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-3), train, val, a.epochs)
