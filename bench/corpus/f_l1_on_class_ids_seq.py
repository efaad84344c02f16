"""Fault (loss_task_mismatch): an L1 loss on 3 class ids from a GRU."""

from _kit import *
x, y = sequences()
tr, va = split(x, y)
m = SeqClassifier("gru", classes=1)
fit(m, nn.L1Loss(), torch.optim.Adam(m.parameters(), 3e-3), tr, va, 4, target=lambda t: t.float()[:, None], classify=False)
