"""Fault (exploding_gradients): large init in a deep MLP hidden by clip_grad_norm_(…, 1.0): the clipped norm reads 1.0, the norm before clipping is huge."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = mlp(depth=6)
for l in m:
    if isinstance(l, nn.Linear):
        nn.init.normal_(l.weight, std=1.5)
fit(m, nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), 1e-3), tr, va, 5, clip=1.0)
