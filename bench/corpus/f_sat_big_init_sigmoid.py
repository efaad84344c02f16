"""Fault (sigmoid_saturation): sigmoid hidden layers with weights at std 5: pre-activations of +-20."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = mlp(act=nn.Sigmoid, depth=3)
for l in m:
    if isinstance(l, nn.Linear):
        nn.init.normal_(l.weight, std=5.0)
fit(m, nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), 0.01), tr, va, 5)
