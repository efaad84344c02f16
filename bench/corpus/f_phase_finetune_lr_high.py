"""Fault (lr_too_high): pre-train well, then fine-tune with a new optimizer at lr 0.5 (SGD, momentum): the fine-tuning phase is thrown back to chance."""

from _kit import *
x, y = blobs(seed=1)
tr, va = split(x, y)
m = mlp()
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 2e-3), tr, va, 3, label="pretrain ")
x2, y2 = blobs(n=2048, seed=1, spread=1.8)
tr2, va2 = split(x2, y2)
fit(m, nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), 0.5, momentum=0.9), tr2, va2, 5, label="finetune ")
