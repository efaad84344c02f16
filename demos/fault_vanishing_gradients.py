"""Fault (vanishing_gradients): a 12-layer sigmoid MLP; gradients shrink layer by layer and the first layers stop learning."""

from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
train, val = loaders(*blobs())
model = mlp(depth=12, act=nn.Sigmoid)
fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01), train, val, a.epochs)
