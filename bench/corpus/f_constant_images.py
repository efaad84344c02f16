"""Fault (no_input_variance): images all filled with the same value (a broken loader returns the padding)."""

from _kit import *
x, y = images()
x = torch.full_like(x, 0.5)
tr, va = split(x, y)
m = nn.Sequential(nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 4))
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 1e-3), tr, va, 4)
