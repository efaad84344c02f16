"""Fault (single_class_prediction, accuracy_stuck, class_imbalance): 90% negatives, 75 steps, features that barely carry the label: it learns the bias and answers 'negative' always."""

from _kit import *
x, y = blobs(classes=2, probs=[0.9, 0.1], spread=6.0, n=1500, dim=16)
tr, va = split(x, y, batch=16, val=0.2)
m = mlp(out=2)
fit(m, nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), 0.01), tr, va, 1)
