"""Fault (unshuffled_data): samples sorted by class and a DataLoader without shuffle=True: each batch is one class."""

from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
x, y = blobs()
order = y.argsort(stable=True)
train, val = loaders(x[order], y[order], shuffle=False)  # the bug
model = mlp()
fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-3), train, val, a.epochs)
