"""Fault (lr_too_low): SGD with a learning rate of 1e-6: updates are a millionth of the weights and the loss hardly moves."""

from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
train, val = loaders(*blobs())
model = mlp()
fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=1e-6), train, val, a.epochs)
