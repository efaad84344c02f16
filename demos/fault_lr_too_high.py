"""Fault (lr_too_high): SGD with a learning rate of 3: the loss jumps around instead of falling."""

from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
train, val = loaders(*blobs())
model = mlp()
fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=3.0), train, val, a.epochs)
