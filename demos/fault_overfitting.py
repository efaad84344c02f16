"""Fault (overfitting): 160 noisy training samples, a wide MLP, many epochs: validation loss turns up while training loss falls."""

from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args(epochs=40)
x, y = blobs(n=400, spread=4.0)
train, val = loaders(x, y, batch=32, val_fraction=0.6)
model = mlp(hidden=256)
fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=3e-3), train, val, a.epochs)
