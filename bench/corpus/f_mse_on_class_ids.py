"""Fault (loss_task_mismatch): MSE regression on 5 integer class ids."""

from _kit import *
x, y = blobs(classes=5)
tr, va = split(x, y)
m = mlp(out=1)
fit(m, nn.MSELoss(), torch.optim.Adam(m.parameters(), 1e-3), tr, va, 4, target=lambda t: t.float()[:, None], classify=False)
