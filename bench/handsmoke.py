"""`dlrun debug=smoke` written by hand, as a practitioner would type it: scikit-learn's digits
upsampled to 28x28, normalized, a quarter of every split, LeNet-5, AdamW at 3e-4, 2 epochs of
batch 32 with a validation pass each, then a saved checkpoint. The start-up bench times this
script against dlrun, whole processes alternated (bench/startup.py)."""
import sys

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

torch.manual_seed(0)
d = load_digits()
x = F.interpolate(torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0, size=(28, 28),
                  mode="bilinear", align_corners=False)  # (N, 1, 28, 28)
y = torch.as_tensor(d.target)
perm = torch.randperm(len(y))
n_test, n_val = int(0.15 * len(y)), int(0.15 * 0.85 * len(y))
val, train = perm[n_test:n_test + n_val], perm[n_test + n_val:]
train, val = train[: len(train) // 4], val[: len(val) // 4]  # a quarter, as data.fraction=0.25
mean, std = x[train].mean(), x[train].std()
xt, yt, xv, yv = (x[train] - mean) / std, y[train], (x[val] - mean) / std, y[val]

model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                      nn.Linear(16 * 7 * 7, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
for m in model.modules():
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        nn.init.zeros_(m.bias)
opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.0)
for epoch in range(2):
    model.train()
    order = torch.randperm(len(yt))
    for i in range(0, len(yt), 32):
        idx = order[i:i + 32]
        loss = F.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(xv).argmax(1) == yv).float().mean().item()
    print(f"epoch {epoch + 1}: val acc {acc:.3f}")
torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, sys.argv[1] if len(sys.argv) > 1 else "hand.pt")
