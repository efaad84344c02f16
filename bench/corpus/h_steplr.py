"""Healthy: StepLR halving an SGD rate every two epochs."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = mlp()
opt = torch.optim.SGD(m.parameters(), 0.1, momentum=0.5)
fit(m, nn.CrossEntropyLoss(), opt, tr, va, 8, sched_epoch=torch.optim.lr_scheduler.StepLR(opt, 2, 0.5))
