"""Fault (unnormalized_input): images fed as raw 0-255 pixel values instead of scaled to [0, 1] or standardised."""

from _common import args, fit, images, loaders
from torch import nn, optim

a = args(epochs=4)
x, y = images()
x = ((x - x.min()) / (x.max() - x.min()) * 255).round()  # the bug: raw pixel values
train, val = loaders(x, y)
model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 16 * 16, 4))
fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01), train, val, a.epochs)
