"""Healthy: ReduceLROnPlateau on the validation loss."""

from _kit import *
x, y = blobs(spread=2.0)
tr, va = split(x, y)
m = mlp()
opt = torch.optim.SGD(m.parameters(), 0.05, momentum=0.9)
sch = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=1)
for e in range(8):
    for xb, yb in tr:
        opt.zero_grad(); nn.functional.cross_entropy(m(xb), yb).backward(); opt.step()
    vl, acc = evaluate(m, nn.CrossEntropyLoss(), va)
    sch.step(vl)
    print(f"epoch {e}: val_loss {vl:.4f} val_acc {acc:.3f}", flush=True)
