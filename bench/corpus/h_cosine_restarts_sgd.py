"""Healthy: SGD with CosineAnnealingWarmRestarts (the rate jumps back up each cycle)."""

from _kit import *
x, y = blobs(spread=1.8)
tr, va = split(x, y)
m = mlp()
opt = torch.optim.SGD(m.parameters(), 0.1, momentum=0.9)
fit(m, nn.CrossEntropyLoss(), opt, tr, va, 8, sched=torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, 40))
