"""Fault (weights_not_updating): a LambdaLR whose lambda returns 0 from the start (an integer division)."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = mlp()
opt = torch.optim.SGD(m.parameters(), 0.1)
fit(m, nn.CrossEntropyLoss(), opt, tr, va, 4, sched=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s // 100000))
