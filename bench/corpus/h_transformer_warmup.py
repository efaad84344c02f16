"""Healthy: a small transformer encoder on token sequences, AdamW with warm-up."""

from _kit import *
x, y = tokens()
tr, va = split(x, y)
m = TokenTransformer()
opt = torch.optim.AdamW(m.parameters(), 2e-3)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))
fit(m, nn.CrossEntropyLoss(), opt, tr, va, 5, sched=sched, clip=1.0)
