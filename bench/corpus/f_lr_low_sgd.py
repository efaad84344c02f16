"""Fault (lr_too_low): SGD at lr 1e-6: updates are a millionth of the weights."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = mlp()
fit(m, nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), 1e-6), tr, va, 5)
