"""Fault (val_loss_stagnating, overfitting): training far past convergence on noisy labels: the validation loss stops improving and drifts up."""

from _kit import *
x, y = blobs(n=1200, spread=2.4)
flip = torch.rand(len(y), generator=gen(2)) < 0.15
y[flip] = torch.randint(0, 4, (int(flip.sum()),), generator=gen(3))
tr, va = split(x, y, val=0.5, batch=32)
m = mlp(hidden=128)
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 1e-3), tr, va, 30)
