"""Healthy: a small CNN on stripe images."""

from _kit import *
x, y = images()
tr, va = split(x, y)
m = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 3e-3), tr, va, 5)
