#!/usr/bin/env python3
"""A plain convolutional autoencoder in PyTorch, written apart from d2ae, on the demo's shards: the
reference behind docs/BENCHMARKS.md "Autoencoder" (rows P-A to P-E and the PCA floor).

It mirrors the `small` preset's encoder (3×3 stem, residual stages), the two branches (B_T
average-pooled, B_P flattened, FC to --dim each) and the decoder (FC → 4×4 map → conv stages with
bilinear upsampling → RGB → tanh), trained with MSE and Adam and no identity loss, and reports the
PSNR of decode(encode(x)) on held-out (`test`) images. --lin K adds the decoder's linear image path
(FC → 3×K×K, upsampled, added before tanh); --linin K adds B_P's linear read of the input pooled to
K×K. --pca prints the held-out PSNR of PCA reconstructions instead.

Usage: python scripts/bench/autoencoder_reference.py --shards demo-out/shards [--lin 64 --linin 16]
       python scripts/bench/autoencoder_reference.py --shards demo-out/shards --pca
Needs torch, numpy, pillow (the venv of scripts/bootstrap) and the zstd command.
"""
import argparse, glob, io, json, os, subprocess, tarfile, time
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
from PIL import Image

def load(shards_dir, split, size, cache):
    if os.path.exists(cache):
        z = np.load(cache, allow_pickle=True)
        return z["x"], z["y"], list(z["keys"]), z["factors"], list(z["fnames"])
    xs, ys, keys, facs = [], [], [], []
    fnames = None
    for sh in sorted(glob.glob(f"{shards_dir}/{split}-*.tar.zst")):
        raw = subprocess.run(["zstd", "-dc", sh], capture_output=True, check=True).stdout
        t = tarfile.open(fileobj=io.BytesIO(raw))
        cur = {}
        for m in t.getmembers():
            k, ext = m.name.split(".", 1)
            cur.setdefault(k, {})[ext] = t.extractfile(m).read()
        for k, d in cur.items():
            im = Image.open(io.BytesIO(d["jpg"])).convert("RGB").resize((size, size), Image.BILINEAR)
            xs.append(np.asarray(im).transpose(2, 0, 1))
            ys.append(int(d["cls"]))
            keys.append(k)
            meta = json.loads(d["json"])
            f = meta.get("factors") or {}
            if fnames is None: fnames = sorted(f.keys())
            facs.append([f.get(n, 0.0) for n in fnames])
    x, y = np.stack(xs), np.array(ys)
    np.savez(cache, x=x, y=y, keys=np.array(keys), factors=np.array(facs, dtype=np.float32), fnames=np.array(fnames or []))
    return x, y, keys, np.array(facs, dtype=np.float32), fnames or []
p = argparse.ArgumentParser()
p.add_argument("--shards", required=True); p.add_argument("--pca", action="store_true"); p.add_argument("--cache", default="/tmp"); p.add_argument("--size", type=int, default=64)
p.add_argument("--steps", type=int, default=450); p.add_argument("--bs", type=int, default=32)
p.add_argument("--lr", type=float, default=1e-3); p.add_argument("--dec-start", type=int, default=4)
p.add_argument("--fc-bn", type=int, default=1); p.add_argument("--dim", type=int, default=128)
p.add_argument("--dec", default="128x1,128x2,64x2,32x2,16x1")
p.add_argument("--norm", default="bn"); p.add_argument("--up", default="bilinear")
p.add_argument("--pool-p", default="flatten"); p.add_argument("--eval-every", type=int, default=150)
p.add_argument("--sched", default="none"); p.add_argument("--threads", type=int, default=2)
p.add_argument("--stem", type=int, default=16); p.add_argument("--enc", default="32x1,64x1,128x2")
p.add_argument("--bch", type=int, default=96)
p.add_argument("--act", default="relu"); p.add_argument("--lin", type=int, default=0); p.add_argument("--linin", type=int, default=0); p.add_argument("--neval", type=int, default=512); p.add_argument("--wd", type=float, default=0.0); p.add_argument("--loss", default="mse")
a = p.parse_args()
torch.set_num_threads(a.threads); torch.manual_seed(0)
S = a.size
xtr, ytr, *_ = load(a.shards, "train", S, os.path.join(a.cache, f"d2ae-ae-train{S}.npz"))
xte, yte, *_ = load(a.shards, "test", S, os.path.join(a.cache, f"d2ae-ae-test{S}.npz"))
print("train", xtr.shape, "test", xte.shape, flush=True)
xtr = torch.tensor(xtr).float() / 127.5 - 1; xte = torch.tensor(xte).float() / 127.5 - 1
if a.pca:
    X, T = xtr.flatten(1), xte.flatten(1); mu = X.mean(0)
    _, _, V = torch.linalg.svd(X - mu, full_matrices=False)
    for k in (16, 32, 64, 128, 256):
        R = (T - mu) @ V[:k].T @ V[:k] + mu
        print(f"PCA {k} components: held-out PSNR {(10 * torch.log10(4 / ((R - T) ** 2).mean(1))).mean().item():.2f} dB")
    raise SystemExit
def Norm(c):
    return nn.BatchNorm2d(c) if a.norm == "bn" else (nn.GroupNorm(8 if c>=8 else 1, c) if a.norm=="gn" else nn.Identity())
def Act(): return nn.ReLU() if a.act=="relu" else nn.LeakyReLU(0.2)
def cbr(ci, co, k=3, s=1, act=True):
    l = [nn.Conv2d(ci, co, k, s, k//2, bias=False), Norm(co)]
    if act: l.append(Act())
    return nn.Sequential(*l)
class Block(nn.Module):
    def __init__(s, ci, co, st):
        super().__init__(); s.c = nn.Sequential(cbr(ci, co, 3, st), cbr(co, co, 3, 1, False))
        s.sc = cbr(ci, co, 1, st, False) if (st != 1 or ci != co) else nn.Identity()
    def forward(s, x): return F.relu(s.c(x) + s.sc(x))
stages = [tuple(map(int, t.split("x"))) for t in a.enc.split(",")]
class Enc(nn.Module):
    def __init__(s):
        super().__init__(); l = [cbr(3, a.stem)]; c = a.stem
        for ch, n in stages:
            for b in range(n): l.append(Block(c, ch, 2 if b == 0 else 1)); c = ch
        s.net = nn.Sequential(*l); s.c = c
    def forward(s, x): return s.net(x)
m = S // (2 ** len(stages))
class Branch(nn.Module):
    def __init__(s, ci, pool):
        super().__init__(); c = a.bch
        s.convs = nn.Sequential(cbr(ci, c, 1), cbr(c, c), cbr(c, c)); s.pool = pool
        s.fc = nn.Linear(c * m * m if pool == "flatten" else c, a.dim)
    def forward(s, x):
        y = s.convs(x)
        y = y.flatten(1) if s.pool == "flatten" else y.mean((2, 3))
        return s.fc(y)
dst = [tuple(map(int, t.split("x"))) for t in a.dec.split(",")]
sizes = [S]
for _ in range(len(dst) - 1): sizes.append((sizes[-1] + 1) // 2)
sizes = sizes[::-1]
class Dec(nn.Module):
    def __init__(s):
        super().__init__(); c0 = dst[0][0]; s.c0 = c0; s0 = sizes[0]
        s.fc = nn.Linear(2 * a.dim, c0 * s0 * s0); s.bn = Norm(c0) if a.fc_bn else nn.Identity()
        s.st = nn.ModuleList(); c = c0
        for ch, n in dst:
            l = []
            for _ in range(n): l.append(cbr(c, ch)); c = ch
            s.st.append(nn.Sequential(*l))
        s.rgb = nn.Conv2d(c, 3, 3, 1, 1)
        s.lin = nn.Linear(2 * a.dim, 3 * a.lin * a.lin) if a.lin else None
    def forward(s, f):
        y = F.relu(s.bn(s.fc(f).view(-1, s.c0, sizes[0], sizes[0])))
        for i, st in enumerate(s.st):
            if i > 0: y = F.interpolate(y, size=(sizes[i], sizes[i]), mode=a.up) if a.up!="bilinear" else F.interpolate(y, size=(sizes[i], sizes[i]), mode="bilinear", align_corners=False)
            y = st(y)
        y = s.rgb(y)
        if s.lin is not None:
            l = s.lin(f).view(-1, 3, a.lin, a.lin)
            if a.lin != S: l = F.interpolate(l, size=(S, S), mode="bilinear", align_corners=False)
            y = y + l
        return torch.tanh(y)
enc = Enc(); bt = Branch(enc.c, "average"); bp = Branch(enc.c, a.pool_p); dec = Dec()
linin = nn.Linear(3 * a.linin * a.linin, a.dim) if a.linin else None
params = [*enc.parameters(), *bt.parameters(), *bp.parameters(), *dec.parameters()] + ([*linin.parameters()] if linin else [])
opt = torch.optim.Adam(params, lr=a.lr, weight_decay=a.wd)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.steps, pct_start=0.15) if a.sched=="onecycle" else (torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.steps) if a.sched=="cos" else None)
mods = [enc, bt, bp, dec]
def recon(x, train):
    for mm in mods: mm.train(train)
    h = enc(x); fp = bp(h)
    if linin is not None: fp = fp + linin(F.adaptive_avg_pool2d(x, a.linin).flatten(1))
    return dec(torch.cat([bt(h), fp], 1))
def psnr(x):
    with torch.no_grad():
        r = torch.cat([recon(x[i:i+128], False) for i in range(0, len(x), 128)])
        mse = ((r - x) ** 2).mean((1, 2, 3)) / 4  # [0,1] scale
        return (10 * torch.log10(1 / mse)).mean().item()
mean_img = xtr.mean(0, keepdim=True)
print("mean-image psnr test", (10*torch.log10(1/(((xte-mean_img)**2).mean((1,2,3))/4))).mean().item())
g = torch.Generator().manual_seed(0); t0 = time.time()
for step in range(1, a.steps + 1):
    idx = torch.randint(0, len(xtr), (a.bs,), generator=g)
    x = xtr[idx]
    r = recon(x, True); loss = F.mse_loss(r, x) if a.loss=="mse" else 0.5*((r-x)**2).sum()/len(x)/(S*S)
    opt.zero_grad(); loss.backward(); opt.step()
    if sched: sched.step()
    if step % a.eval_every == 0 or step == a.steps:
        print(f"step {step} loss {loss.item():.4f} test_psnr {psnr(xte[:a.neval]):.2f} train_psnr {psnr(xtr[:256]):.2f} t {time.time()-t0:.0f}s", flush=True)
