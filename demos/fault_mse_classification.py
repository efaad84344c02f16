"""Fault (loss_task_mismatch): mean squared error on class ids, a regression loss for a classification task."""

from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
train, val = loaders(*blobs())
model = mlp(classes=1)
fit(model, nn.MSELoss(), optim.Adam(model.parameters(), lr=1e-3), train, val, a.epochs, target=lambda y: y.float().unsqueeze(1))
