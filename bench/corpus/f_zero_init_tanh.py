"""Fault (weights_not_updating, accuracy_stuck, vanishing_gradients): every weight of a tanh MLP initialised to 0: hidden gradients are exactly zero; only the output bias moves."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = mlp(act=nn.Tanh)
for p in m.parameters():
    nn.init.zeros_(p)
fit(m, nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), 0.1), tr, va, 5)
