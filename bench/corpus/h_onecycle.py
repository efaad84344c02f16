"""Healthy: OneCycleLR with SGD and momentum, max_lr 0.05 (the validation loss bumps when the rate peaks)."""

from _kit import *
x, y = blobs(n=4096, spread=2.0)
tr, va = split(x, y, batch=32)
m = mlp(hidden=64)
opt = torch.optim.SGD(m.parameters(), 0.01, momentum=0.9)
ep = 4
fit(m, nn.CrossEntropyLoss(), opt, tr, va, ep, sched=torch.optim.lr_scheduler.OneCycleLR(opt, 0.05, total_steps=ep * len(tr)))
