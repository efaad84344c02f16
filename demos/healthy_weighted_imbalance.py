"""Healthy: about 95/5 classes handled with a class-weighted loss; the model predicts both classes. No alert should fire (class_imbalance at info is advice)."""

import torch
from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
x, y = blobs(n=8000, classes=2, spread=3.0)
keep = (y == 0) | (torch.rand(len(y), generator=torch.Generator().manual_seed(1)) < 0.053)
x, y = x[keep][:2560], y[keep][:2560]
train, val = loaders(x, y)
share = torch.bincount(y, minlength=2).float() / len(y)
model = mlp(classes=2)
fit(model, nn.CrossEntropyLoss(weight=1.0 / share), optim.Adam(model.parameters(), lr=1e-3), train, val, a.epochs)
