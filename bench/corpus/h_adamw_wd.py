"""Healthy: AdamW with strong weight decay and a wider MLP."""

from _kit import *
x, y = blobs(classes=5, spread=1.8)
tr, va = split(x, y)
m = mlp(out=5, hidden=128)
fit(m, nn.CrossEntropyLoss(), torch.optim.AdamW(m.parameters(), 1e-3, weight_decay=0.1), tr, va, 6)
