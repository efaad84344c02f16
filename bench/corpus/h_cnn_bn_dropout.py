"""Healthy: a CNN with BatchNorm and dropout, SGD with momentum."""

from _kit import *
x, y = images(noise=1.0)
tr, va = split(x, y)
m = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                  nn.Dropout(0.2), nn.Linear(16, 4))
fit(m, nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), 0.05, momentum=0.9), tr, va, 5)
