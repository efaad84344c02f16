"""Fault (unnormalized_input): 8-bit pixel values (0-255) fed to a CNN without /255."""

from _kit import *
x, y = images()
x = ((x - x.min()) / (x.max() - x.min()) * 255).round()
tr, va = split(x, y)
m = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, 4))
fit(m, nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), 1e-3), tr, va, 4)
