"""Fault (single_class_prediction, class_imbalance): 97% of samples in one class, overlapping features, an unweighted loss: the model answers the majority."""

from _kit import *
x, y = blobs(classes=3, probs=[0.97, 0.02, 0.01], spread=5.0, n=3072)
tr, va = split(x, y)
m = mlp(out=3)
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 1e-3), tr, va, 4)
