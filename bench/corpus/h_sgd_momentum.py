"""Healthy: SGD with Nesterov momentum 0.9, lr 0.05, on 6 classes."""

from _kit import *
x, y = blobs(classes=6, spread=1.3)
tr, va = split(x, y)
m = mlp(out=6)
fit(m, nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), 0.05, momentum=0.9, nesterov=True), tr, va)
