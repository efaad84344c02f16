"""Healthy: each epoch evaluates the training split, then the validation split, under no_grad."""

from _kit import *
x, y = blobs(spread=2.2)
tr, va = split(x, y)
m = mlp(hidden=128)
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 2e-3), tr, va, 8, eval_train=True)
