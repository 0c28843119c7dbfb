#!/usr/bin/env python3
"""Identity head experiment in plain PyTorch (docs/BENCHMARKS.md#real-faces): the `small` preset's
encoder and identity branch (scripts/bench/model_reference.py) trained on the training partition of
../shared/data/celeba-aligned-5k with a linear softmax head or a cosine head with a margin, then
verified on its pairs.csv (10-fold threshold cross-validation, cosine scores).

Usage: identity_head.py linear|norm|cos|arc IMAGES [SEED]
  linear  FC + softmax (the paper's W_T)        norm  cosine logits, s = 16, no margin
  cos     cosine, s = 16, margin 0.2 (CosFace)  arc   cosine, s = 30, margin 0.35
  IMAGES  training images seen (batches of 32, Adam 1e-3, divided by 10 at 80%)
One CPU thread; run from anywhere with the venv's python (scripts/env.sh).
"""
import os, sys, time, math, random
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
from PIL import Image
from model_reference import ResidualEncoder, Branch
torch.set_num_threads(1)
mode = sys.argv[1]; images_budget = int(sys.argv[2]); seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
torch.manual_seed(seed); random.seed(seed); np.random.seed(seed)
root = os.environ.get("D2AE_REAL_DATA", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../shared/data/celeba-aligned-5k")) + "/"
ident = dict(l.split() for l in open(root + "identity_CelebA.txt"))
part = dict(l.split() for l in open(root + "list_eval_partition.txt"))
def load(f):
    im = Image.open(root + "img_align_celeba/" + f).convert("RGB").resize((80, 80), Image.LANCZOS).resize((64, 64), Image.BILINEAR)
    return np.asarray(im)
train = [f for f in sorted(ident) if part[f] == "0"]
test = sorted({x for l in open(root + "pairs.csv") for x in l.strip().split(",")[:2]})
ids = sorted({ident[f] for f in train}); idx = {k: i for i, k in enumerate(ids)}
X = torch.tensor(np.stack([load(f) for f in train])).permute(0, 3, 1, 2).float() / 127.5 - 1
Y = torch.tensor([idx[ident[f]] for f in train])
T = torch.tensor(np.stack([load(f.split("/")[1]) for f in test])).permute(0, 3, 1, 2).float() / 127.5 - 1
tpos = {f: i for i, f in enumerate(test)}
class Net(nn.Module):
    def __init__(s):
        super().__init__()
        s.enc = ResidualEncoder({"stem_channels": 16, "stages": [{"channels": 32, "blocks": 1}, {"channels": 64, "blocks": 1}, {"channels": 128, "blocks": 2}]})
        s.br = Branch(128, {"channels": 96, "feature_dim": 128})
        s.w = nn.Linear(128, len(ids), bias=(mode == "linear"))
    def feat(s, x): return s.br(s.enc(x))
    def logits(s, f, y):
        if mode == "linear": return s.w(f)
        sc, m = (16.0, 0.0) if mode == "norm" else (16.0, 0.2) if mode == "cos" else (30.0, 0.35)
        c = F.normalize(f) @ F.normalize(s.w.weight).t()
        return sc * (c - m * F.one_hot(y, len(ids)))
net = Net(); opt = torch.optim.Adam(net.parameters(), 1e-3)
bs = 32; steps = images_budget // bs
sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(steps * 0.8)], 0.1)
t0 = time.time(); net.train()
for st in range(steps):
    b = torch.randint(0, len(X), (bs,)); x = X[b].clone(); y = Y[b]
    fl = torch.rand(bs) < 0.5; x[fl] = x[fl].flip(3)
    loss = F.cross_entropy(net.logits(net.feat(x), y), y)
    opt.zero_grad(); loss.backward(); opt.step(); sched.step()
net.eval()
with torch.no_grad(): ft = F.normalize(torch.cat([net.feat(T[i:i+256]) for i in range(0, len(T), 256)]))
pairs = [l.strip().split(",") for l in open(root + "pairs.csv")]
sc = np.array([float(ft[tpos[a]] @ ft[tpos[b]]) for a, b, _, _ in pairs]); lab = np.array([int(p[2]) for p in pairs]); fold = np.array([int(p[3]) for p in pairs])
accs = []
for k in range(10):
    tr = fold != k
    th = max(sorted(set(sc[tr])), key=lambda t: ((sc[tr] >= t) == lab[tr]).mean())
    accs.append(((sc[fold == k] >= th) == lab[fold == k]).mean())
print(mode, images_budget, seed, f"acc {np.mean(accs)*100:.1f} ± {np.std(accs)*100:.1f} folds {min(accs)*100:.0f}-{max(accs)*100:.0f} loss {loss.item():.2f} {time.time()-t0:.0f}s", flush=True)
