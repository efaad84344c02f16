"""Healthy: binary classification with one logit and BCEWithLogitsLoss. No alert should fire."""

from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
train, val = loaders(*blobs(classes=2))
model = mlp(classes=1)
fit(model, nn.BCEWithLogitsLoss(), optim.Adam(model.parameters(), lr=1e-3), train, val, a.epochs,
    target=lambda y: y.float().unsqueeze(1))
