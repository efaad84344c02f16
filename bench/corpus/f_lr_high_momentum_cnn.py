"""Fault (lr_too_high): a CNN trained with SGD momentum 0.9 at lr 1.0."""

from _kit import *
x, y = images()
tr, va = split(x, y)
m = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 64, 4))
fit(m, nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), 1.0, momentum=0.9), tr, va, 4)
