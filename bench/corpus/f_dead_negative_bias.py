"""Fault (dead_relu): hidden ReLU biases initialised at -10: almost every unit outputs zero."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = mlp(depth=3)
for l in list(m)[:-1]:
    if isinstance(l, nn.Linear):
        nn.init.constant_(l.bias, -10.0)
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 1e-4), tr, va, 5)
