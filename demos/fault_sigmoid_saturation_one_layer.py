"""Fault (sigmoid_saturation): a 3-hidden-layer sigmoid MLP whose middle layer starts with 30x weights: about 70% of its sigmoids sit within 0.01 of 0 or 1; the others are fine."""

import torch
from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
train, val = loaders(*blobs())
model = mlp(act=nn.Sigmoid, depth=3)
with torch.no_grad():
    model[2].weight.mul_(30.0)  # the bug: one layer's init
    model[2].bias.mul_(30.0)
fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-3), train, val, a.epochs)
