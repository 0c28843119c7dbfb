#!/usr/bin/env python3
"""The Python reference for the loader benchmark: webdataset + PIL + torch DataLoader.

Reads the same shards as `d2ae-loader bench` (decompressed to plain .tar, since webdataset does not
read zstd), decodes each JPEG with PIL, flips at random, converts to a uint8 CHW tensor and batches
with torch.utils.data.DataLoader. Prints one JSON object: images, wall time, images/s, and CPU
seconds of this process and its DataLoader workers (so images per CPU-second compares per core).

    python scripts/bench/loader_reference.py --workers 1 --batch-size 64 DIR/*.tar
"""

import argparse
import json
import random
import resource
import time

import numpy as np
import torch
import webdataset as wds
from PIL import Image


def cpu_seconds():
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def to_tensor(img: Image.Image):
    if random.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    arr = np.asarray(img.convert("RGB"))
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shards", nargs="+", help="decompressed .tar shards")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()

    dataset = (
        wds.WebDataset(args.shards, shardshuffle=False, empty_check=False)
        .decode("pil")
        .to_tuple("jpg", "cls")
        .map_tuple(to_tensor, lambda c: int(c))
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    images = 0
    for _ in range(args.epochs):
        for imgs, _labels in loader:
            images += imgs.shape[0]
    wall = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({
        "images": images,
        "wall_s": wall,
        "images_per_sec": images / wall,
        "cpu_s": cpu,
        "images_per_cpu_sec": images / cpu if cpu > 0 else None,
        "workers": args.workers,
        "peak_rss_bytes_main": peak,
    }))


if __name__ == "__main__":
    main()
