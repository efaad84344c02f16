"""Healthy: a 20-64-64-4 MLP on Gaussian blobs, Adam, cross-entropy. No alert should fire."""

from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
train, val = loaders(*blobs())
model = mlp()
fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-3), train, val, a.epochs)
