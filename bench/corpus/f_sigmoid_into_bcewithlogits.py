"""Fault (output_activation_mismatch): a sigmoid output fed to BCEWithLogitsLoss."""

from _kit import *
x, y = blobs(classes=2)
tr, va = split(x, y)
m = nn.Sequential(mlp(out=1), nn.Sigmoid())
fit(m, nn.BCEWithLogitsLoss(), torch.optim.Adam(m.parameters(), 1e-3), tr, va, 4, target=lambda t: t.float()[:, None], binary="prob")
