"""Fault (dead_relu): a CNN whose first conv's bias starts at -6: its ReLU never fires."""

from _kit import *
x, y = images()
tr, va = split(x, y)
m = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
nn.init.constant_(m[0].bias, -6.0)
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 1e-4), tr, va, 4)
