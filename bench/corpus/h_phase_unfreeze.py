"""Healthy: gradual unfreezing under one optimizer: the body frozen while the head trains, then the body unfrozen and trained on."""

from _kit import *
x, y = blobs(seed=2, spread=2.0)
tr, va = split(x, y)
m = mlp()
for layer in m[:-1]:
    for p in layer.parameters():
        p.requires_grad_(False)
opt = torch.optim.SGD(m.parameters(), 0.05, momentum=0.9)
fit(m, nn.CrossEntropyLoss(), opt, tr, va, 4, label="head only ")
for p in m.parameters():
    p.requires_grad_(True)
fit(m, nn.CrossEntropyLoss(), opt, tr, va, 5, label="unfrozen ")
