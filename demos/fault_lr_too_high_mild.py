"""Fault (lr_too_high): SGD with momentum 0.9 at a learning rate of 0.3, 6x the 0.05 this model trains well at: it learns for an epoch, then falls back to chance. No NaN."""

from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
train, val = loaders(*blobs())
model = mlp()
fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.3, momentum=0.9), train, val, a.epochs)
