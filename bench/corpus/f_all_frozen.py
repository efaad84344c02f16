"""Fault (weights_not_updating): every parameter frozen (requires_grad=False) but for a bias kept by mistake out of the optimizer."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = mlp()
for p in m.parameters():
    p.requires_grad_(False)
m[-1].bias.requires_grad_(True)
opt = torch.optim.Adam([p for p in m.parameters() if not p.requires_grad] + [torch.zeros(1, requires_grad=True)], 1e-3)
fit(m, nn.CrossEntropyLoss(), opt, tr, va, 4)
