"""Fault (accuracy_stuck): labels drawn independently of the inputs."""

from _kit import *
x, y = blobs()
y = torch.randint(0, 4, y.shape, generator=gen(9))
tr, va = split(x, y)
m = mlp()
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 1e-3), tr, va, 5)
