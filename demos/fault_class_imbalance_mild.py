"""Fault (class_imbalance, single_class_prediction): 90% of the samples are one class, the loss is unweighted; on overlapping classes the model answers the majority."""

import torch
from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
x, y = blobs(n=6000, classes=2, spread=6.0)
keep = (y == 0) | (torch.rand(len(y), generator=torch.Generator().manual_seed(1)) < 0.11)
x, y = x[keep][:2560], y[keep][:2560]  # about 90/10
train, val = loaders(x, y)
model = mlp(classes=2)
fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01), train, val, a.epochs)
