"""Fault (lr_too_high): OneCycleLR with max_lr=0.5 for SGD with momentum 0.9: the run learns in its first epoch, then the rate peaks and throws it back to chance."""

from _kit import *
x, y = blobs(spread=2.0)
tr, va = split(x, y, batch=32)
m = mlp(hidden=128)
opt = torch.optim.SGD(m.parameters(), 0.1, momentum=0.9)
ep = 8
fit(m, nn.CrossEntropyLoss(), opt, tr, va, ep, sched=torch.optim.lr_scheduler.OneCycleLR(opt, 0.5, total_steps=ep * len(tr)))
