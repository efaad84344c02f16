"""Fault (overfitting): 480 training samples (three times the blatant demo's), less noise, a 128-wide MLP, 40 epochs: validation loss turns up slowly."""

from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args(epochs=40)
x, y = blobs(n=800, spread=3.5)
train, val = loaders(x, y, batch=32, val_fraction=0.4)
model = mlp(hidden=128)
fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=3e-3), train, val, a.epochs)
