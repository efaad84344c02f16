"""Healthy: multi-label classification (5 independent labels) with BCEWithLogitsLoss."""

from _kit import *
g = gen(0)
x = torch.randn(1536, 16, generator=g)
w = torch.randn(16, 5, generator=g)
y = ((x @ w + 0.3 * torch.randn(1536, 5, generator=g)) > 0.3).float()
tr, va = split(x, y)
m = mlp(out=5)
fit(m, nn.BCEWithLogitsLoss(), torch.optim.Adam(m.parameters(), 2e-3), tr, va, 6, classify=False)
