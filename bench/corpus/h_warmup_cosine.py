"""Healthy: AdamW with linear warm-up over 60 steps then cosine decay."""

from _kit import *
x, y = blobs(classes=5)
tr, va = split(x, y)
m = mlp(out=5)
opt = torch.optim.AdamW(m.parameters(), 3e-3, weight_decay=0.01)
total = 8 * len(tr)
f = lambda s: (s + 1) / 60 if s < 60 else 0.5 * (1 + math.cos(math.pi * (s - 60) / (total - 60)))
fit(m, nn.CrossEntropyLoss(), opt, tr, va, 8, sched=torch.optim.lr_scheduler.LambdaLR(opt, f))
