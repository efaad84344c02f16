"""Fault (class_imbalance, single_class_prediction): 97% of the samples are one class; the model predicts only it."""

import torch
from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
x, y = blobs(classes=2, spread=6.0)
keep = (y == 0) | (torch.rand(len(y), generator=torch.Generator().manual_seed(1)) < 0.03)
train, val = loaders(x[keep].repeat(2, 1), y[keep].repeat(2))
model = mlp(classes=2)
fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01), train, val, a.epochs)
