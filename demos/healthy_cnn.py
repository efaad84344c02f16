"""Healthy: a two-conv-layer CNN on 3×32×32 synthetic images, SGD with momentum. No alert should fire."""

from _common import args, fit, images, loaders
from torch import nn, optim

a = args(epochs=3)
train, val = loaders(*images())
model = nn.Sequential(
    nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(32 * 8 * 8, 4),
)
fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01, momentum=0.9), train, val, a.epochs)
