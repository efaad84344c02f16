"""Healthy: each epoch evaluates the training split, then the validation split, under no_grad (both passes through DataLoaders)."""

from _kit import *
x, y = blobs(n=3072, spread=1.8)
tr, va = split(x, y)
m = mlp()
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 1e-3), tr, va, 4, eval_train=True)
