"""Healthy: plain cross-entropy first, then label smoothing 0.2 from epoch 4 on (its loss floor is higher: the loss jumps up, by design)."""

from _kit import *
x, y = blobs(seed=3, spread=1.2)
tr, va = split(x, y)
m = mlp()
opt = torch.optim.Adam(m.parameters(), 2e-3)
fit(m, nn.CrossEntropyLoss(), opt, tr, va, 4, label="plain ")
fit(m, nn.CrossEntropyLoss(label_smoothing=0.2), opt, tr, va, 5, label="smoothed ")
