"""Fault (double_softmax): the model ends in nn.Softmax and feeds nn.CrossEntropyLoss."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = nn.Sequential(mlp(), nn.Softmax(dim=1))
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 1e-3), tr, va, 4)
