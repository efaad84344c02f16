"""Fault (output_activation_mismatch): a sigmoid output fed to BCEWithLogitsLoss, which applies a sigmoid itself."""

from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
train, val = loaders(*blobs(classes=2))
model = nn.Sequential(*mlp(classes=1), nn.Sigmoid())
fit(model, nn.BCEWithLogitsLoss(), optim.Adam(model.parameters(), lr=1e-3), train, val, a.epochs,
    target=lambda y: y.float().unsqueeze(1))
