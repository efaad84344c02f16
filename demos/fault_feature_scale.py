"""Fault (unnormalized_input): one feature (an amount in cents, say) is on a 1000x scale; the other 19 are standardised."""

from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
x, y = blobs()
x = (x - x.mean(0)) / x.std(0)
x[:, 3] = x[:, 3] * 1000.0  # the bug: this column was left out of the scaler
train, val = loaders(x, y)
model = mlp()
fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-3), train, val, a.epochs)
