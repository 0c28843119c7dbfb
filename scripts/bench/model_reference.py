#!/usr/bin/env python3
"""The D2AE model with a residual encoder (the `small` preset) written in plain PyTorch.

It mirrors train/src/model/ layer for layer, with the same variable names as the Rust VarStore,
so a checkpoint written by d2ae-train loads here unchanged. Two uses:

  check  load a d2ae checkpoint and a batch, run the eval-mode forward and the losses, and write
         the outputs, so a test can compare them with tch's (tests: train/tests/python_reference.rs)
  bench  time forward + losses + backward + SGD step on a batch, for `d2ae-train bench-model`,
         which runs the same step in tch in the same process tree and reports both

Only the residual encoder is mirrored (the paper's Inception-ResNet-v1 is not needed here).
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file


class ConvBn(nn.Module):
    """Conv, optionally followed by BatchNorm and ReLU (train/src/model/layers.rs)."""

    def __init__(self, c_in, c_out, k, stride=1, bn=True, relu=True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, bias=not bn)
        self.bn = nn.BatchNorm2d(c_out) if bn else None
        self.relu = relu

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = ConvBn(c_in, c_out, 3, stride)
        self.conv2 = ConvBn(c_out, c_out, 3, 1, relu=False)
        self.shortcut = (
            ConvBn(c_in, c_out, 1, stride, relu=False) if stride != 1 or c_in != c_out else None
        )

    def forward(self, x):
        skip = self.shortcut(x) if self.shortcut is not None else x
        return F.relu(self.conv2(self.conv1(x)) + skip)


class ResidualEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.stem = ConvBn(3, cfg["stem_channels"], 3, 1)
        c_in = cfg["stem_channels"]
        stages = []
        for stage in cfg["stages"]:
            blocks = []
            for b in range(stage["blocks"]):
                blocks.append(BasicBlock(c_in, stage["channels"], 2 if b == 0 else 1))
                c_in = stage["channels"]
            stages.append(nn.ModuleList(blocks))
        self.stages = nn.ModuleList(stages)
        self.out_channels = c_in

    def forward(self, x):
        x = self.stem(x)
        for stage in self.stages:
            for block in stage:
                x = block(x)
        return x


class Branch(nn.Module):
    def __init__(self, c_in, cfg):
        super().__init__()
        c = cfg["channels"]
        self.convs = nn.ModuleList([ConvBn(c_in, c, 1), ConvBn(c, c, 3), ConvBn(c, c, 3)])
        self.fc = nn.Linear(c, cfg["feature_dim"])

    def forward(self, x):
        for conv in self.convs:
            x = conv(x)
        return self.fc(x.mean(dim=(2, 3)))


def decoder_sizes(image_size, n_stages):
    sizes = [image_size]
    for _ in range(n_stages - 1):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes[::-1]


class Decoder(nn.Module):
    def __init__(self, cfg, in_dim):
        super().__init__()
        stages_cfg = cfg["decoder"]["stages"]
        self.sizes = decoder_sizes(cfg["image_size"], len(stages_cfg))
        self.c0 = stages_cfg[0]["channels"]
        self.fc = nn.Linear(in_dim, self.c0 * self.sizes[0] ** 2)
        self.fc_bn = nn.BatchNorm2d(self.c0)
        c_in = self.c0
        stages = []
        for st in stages_cfg:
            convs = []
            for _ in range(st["convs"]):
                convs.append(ConvBn(c_in, st["channels"], 3))
                c_in = st["channels"]
            stages.append(nn.ModuleList(convs))
        self.stages = nn.ModuleList(stages)
        self.to_rgb = ConvBn(c_in, 3, 3, bn=False, relu=False)

    def forward(self, f):
        s0 = self.sizes[0]
        x = F.relu(self.fc_bn(self.fc(f).view(-1, self.c0, s0, s0)))
        for s, stage in enumerate(self.stages):
            if s > 0:
                x = F.interpolate(x, size=(self.sizes[s],) * 2, mode="bilinear", align_corners=False)
            for conv in stage:
                x = conv(x)
        return torch.tanh(self.to_rgb(x))


class StatAug(nn.Module):
    """Section 3.4: f + eps * sigma, sigma the detached per-channel batch std, with a running
    estimate (momentum as in batch norm)."""

    def __init__(self, dim, momentum):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("running_std", torch.ones(dim))

    def track(self, f):
        if f.shape[0] < 2:
            return self.running_std
        sigma = f.detach().std(dim=0, unbiased=True)
        with torch.no_grad():
            self.running_std.mul_(1 - self.momentum).add_(sigma * self.momentum)
        return sigma

    def augment(self, f):
        return f + torch.randn_like(f) * self.track(f).unsqueeze(0)


class D2ae(nn.Module):
    def __init__(self, cfg, num_identities):
        super().__init__()
        enc = cfg["encoder"]
        if enc["kind"] != "residual" or cfg["baseline"]:
            raise SystemExit("model_reference.py mirrors only the residual, non-baseline model")
        self.cfg = cfg
        dim = cfg["branch"]["feature_dim"]
        self.encoder = ResidualEncoder(enc)
        c = self.encoder.out_channels
        self.branch_t = Branch(c, cfg["branch"])
        self.branch_p = Branch(c, cfg["branch"])
        self.w_t = nn.Linear(dim, num_identities)
        self.w_p = nn.Linear(dim, num_identities)
        self.decoder = Decoder(cfg, 2 * dim)
        self.stat_t = StatAug(dim, cfg["stat_aug"]["momentum"])
        self.stat_p = StatAug(dim, cfg["stat_aug"]["momentum"])

    def forward(self, x):
        aug = self.training and self.cfg["stat_aug"]["enabled"]
        m = self.encoder(x)
        f_t, f_p = self.branch_t(m), self.branch_p(m)
        f_t_aug = f_p_aug = None
        if self.training:
            if aug:
                f_t_aug, f_p_aug = self.stat_t.augment(f_t), self.stat_p.augment(f_p)
            else:
                self.stat_t.track(f_t)
                self.stat_p.track(f_p)
        ft_cls = f_t_aug if f_t_aug is not None else f_t
        fp_cls = f_p_aug if f_p_aug is not None else f_p
        out = {
            "f_t": f_t,
            "f_p": f_p,
            "logits_t": self.w_t(ft_cls),
            # L_T^adv trains W_P only (f_P detached); L_H sees W_P frozen.
            "logits_p": self.w_p(fp_cls.detach()),
            "logits_p_fixed": F.linear(fp_cls, self.w_p.weight.detach(), self.w_p.bias.detach()),
            "recon": self.decoder(torch.cat([f_t, f_p], 1)),
        }
        if aug:
            out["recon_aug"] = self.decoder(torch.cat([f_t_aug, f_p_aug], 1))
        return out

    def losses(self, out, labels, images):
        cfg = self.cfg
        lam_x = cfg["recon_weight"] / cfg["image_size"] ** 2
        terms = {"l_t": F.cross_entropy(out["logits_t"], labels)}
        if cfg["use_adv"]:
            terms["l_adv"] = F.cross_entropy(out["logits_p"], labels)
        if cfg["use_lh"]:
            terms["l_h"] = -F.log_softmax(out["logits_p_fixed"], -1).mean(-1).mean()
        b = images.shape[0]
        terms["l_x"] = 0.5 * (images - out["recon"]).square().sum() / b
        if "recon_aug" in out:
            terms["l_x_aug"] = 0.5 * (images - out["recon_aug"]).square().sum() / b
        total = cfg["lambda_t"] * terms["l_t"]
        for k, w in [("l_adv", cfg.get("adversary_weight", cfg["lambda_p"])), ("l_h", cfg["lambda_p"]),
                     ("l_x", lam_x), ("l_x_aug", lam_x)]:
            if k in terms:
                total = total + w * terms[k]
        terms["total"] = total
        return terms


def load_checkpoint(path):
    """A d2ae checkpoint (train/src/checkpoint.rs) → (model, config)."""
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    cfg = json.loads(meta["config"])
    model = D2ae(cfg, int(meta["num_identities"]))
    missing, unexpected = model.load_state_dict(load_file(path), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"checkpoint mismatch: missing {missing}, unexpected {unexpected}")
    return model, cfg


def cmd_check(args):
    model, _ = load_checkpoint(args.weights)
    batch = load_file(args.batch)
    images, labels = batch["images"], batch["labels"]
    model.eval()
    with torch.no_grad():
        out = model(images)
        terms = model.losses(out, labels, images)
    tensors = {k: v.contiguous() for k, v in out.items()}
    tensors.update({k: v.reshape(1) for k, v in terms.items()})
    save_file(tensors, args.out)


def cmd_bench(args):
    torch.set_num_threads(args.threads)
    model, cfg = load_checkpoint(args.weights)
    batch = load_file(args.batch)
    images, labels = batch["images"], batch["labels"]
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    times, first_loss = [], None
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        terms = model.losses(model(images), labels, images)
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
        loss = terms["total"].item()
        dt = time.perf_counter() - t0
        if first_loss is None:
            first_loss = loss
        if step >= args.warmup:
            times.append(dt)
    json.dump(
        {
            "impl": f"pytorch {torch.__version__}",
            "threads": torch.get_num_threads(),
            "steps": len(times),
            "median_s": statistics.median(times),
            "mean_s": statistics.fmean(times),
            "min_s": min(times),
            "times_s": times,
            "first_loss": first_loss,
            "last_loss": loss,
        },
        sys.stdout,
    )
    print()
    if not math.isfinite(loss):
        raise SystemExit("loss is not finite")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="eval-mode forward and losses of a checkpoint on a batch")
    c.add_argument("--weights", required=True, help="d2ae checkpoint (.safetensors)")
    c.add_argument("--batch", required=True, help="safetensors with `images` (f32) and `labels` (i64)")
    c.add_argument("--out", required=True, help="where to write the outputs (.safetensors)")
    b = sub.add_parser("bench", help="time training steps of a checkpoint's model on a batch")
    b.add_argument("--weights", required=True)
    b.add_argument("--batch", required=True)
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--lr", type=float, default=0.01)
    args = ap.parse_args()
    {"check": cmd_check, "bench": cmd_bench}[args.cmd](args)


if __name__ == "__main__":
    main()
