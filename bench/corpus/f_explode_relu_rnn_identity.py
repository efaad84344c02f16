"""Fault (exploding_gradients): an identity-initialised ReLU RNN (IRNN) over 40 steps without clipping, input weights 3x too large: a gradient burst in the first steps, then a run stuck near chance."""

from _kit import *
x, y = sequences(length=40)
tr, va = split(x, y)
m = SeqClassifier("rnn", nonlinearity="relu", hidden=48)
with torch.no_grad():
    m.rnn.weight_hh_l0.copy_(torch.eye(48))
    m.rnn.weight_ih_l0.mul_(3)
opt = torch.optim.SGD(m.parameters(), 0.01)
for e in range(5):
    for i, (xb, yb) in enumerate(tr):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(m(xb), yb)
        loss.backward()
        if e == 0 and i < 6:
            print(f"step {i}: loss {float(loss):.3f} grad_norm {float(torch.norm(torch.stack([p.grad.norm() for p in m.parameters()]))):.1f}", flush=True)
        opt.step()
    vl, acc = evaluate(m, nn.CrossEntropyLoss(), va)
    print(f"epoch {e}: loss {float(loss):.4f} val_loss {vl:.4f} val_acc {acc:.3f}", flush=True)
