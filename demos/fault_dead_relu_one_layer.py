"""Fault (dead_relu): the first hidden layer's biases start at -3 (a hand-rolled init): most of its ReLUs never fire; the second layer is fine."""

import torch
from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
train, val = loaders(*blobs())
model = mlp(hidden=128)
with torch.no_grad():
    model[0].bias.fill_(-3.0)  # the bug: one layer only
fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01), train, val, a.epochs)
