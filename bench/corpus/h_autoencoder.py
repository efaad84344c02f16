"""Healthy: an autoencoder (32-16-4-16-32) reconstructing low-rank data with MSE."""

from _kit import *
x = lowrank()
tr, va = split(x, x)
m = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4), nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 32))
fit(m, nn.MSELoss(), torch.optim.Adam(m.parameters(), 3e-3), tr, va, 8, classify=False)
