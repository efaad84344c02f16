"""Healthy: regression with Huber loss, SGD with momentum."""

from _kit import *
x, y = regression(noise=0.3)
tr, va = split(x, y)
m = mlp(dim=12, out=1, hidden=32)
fit(m, nn.HuberLoss(), torch.optim.SGD(m.parameters(), 0.02, momentum=0.9), tr, va, 8, classify=False)
