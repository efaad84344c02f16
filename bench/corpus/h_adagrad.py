"""Healthy: Adagrad on a tanh MLP with Xavier initialisation."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = mlp(act=nn.Tanh)
for l in m:
    if isinstance(l, nn.Linear):
        nn.init.xavier_uniform_(l.weight)
fit(m, nn.CrossEntropyLoss(), torch.optim.Adagrad(m.parameters(), 0.05), tr, va, 6)
