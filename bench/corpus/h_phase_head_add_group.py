"""Healthy: pre-train on 4 classes; replace the head for a 3-class task of the same size and add it to the same optimizer (`add_param_group`); fine-tune everything."""

from _kit import *
x, y = blobs(seed=0)
tr, va = split(x, y)
m = mlp()
opt = torch.optim.Adam(m.parameters(), 2e-3)
fit(m, nn.CrossEntropyLoss(), opt, tr, va, 5, label="pretrain ")
m[-1] = nn.Linear(64, 3)
opt.add_param_group({"params": m[-1].parameters(), "lr": 3e-3})
x2, y2 = blobs(classes=3, seed=5, spread=2.2)  # a harder task: its validation loss stays above the first task's
tr2, va2 = split(x2, y2)
fit(m, nn.CrossEntropyLoss(), opt, tr2, va2, 6, label="finetune ")
