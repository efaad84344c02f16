"""Fault (class_imbalance, single_class_prediction): 99/1 binary data, an unweighted loss on weak features."""

from _kit import *
x, y = blobs(classes=2, probs=[0.99, 0.01], spread=4.0, n=3072)
tr, va = split(x, y)
m = mlp(out=2)
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 1e-3), tr, va, 4)
