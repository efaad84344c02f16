"""Fault (lr_too_high): plain SGD at lr 5 on an MLP: the loss jumps instead of falling."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = mlp()
fit(m, nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), 5.0), tr, va, 5)
