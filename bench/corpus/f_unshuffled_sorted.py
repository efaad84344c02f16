"""Fault (unshuffled_data): data sorted by class and a DataLoader without shuffle."""

from _kit import *
x, y = blobs()
o = torch.argsort(y)
tr, va = split(x[o], y[o], shuffle=False, val=0.1)
m = mlp()
fit(m, nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), 0.05), tr, va, 4)
