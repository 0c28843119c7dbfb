#!/usr/bin/env python3
"""Reference per-image ingest in Python, for the side-by-side benchmark of d2ae-ingest's face code.

Does the same work per photo as `prepare_face` + JPEG encode + shard write, single-threaded:
decode the photo, (with --detector: letterbox to 640x640 or --detector-size/--detector-input, run YuNet, pick the most prominent face),
similarity-warp to SIZE x SIZE with the eyes level, IPD = ipd_ratio * SIZE, eyes at eye_y * SIZE,
encode JPEG quality 95, and write .jpg/.cls/.json with webdataset.TarWriter (to memory).

Two variants:
  opencv  cv2.imdecode, cv2.resize, cv2.warpAffine (bilinear), cv2.imencode,
          cv2.FaceDetectorYN for detection.
  pil     Pillow decode (with EXIF transpose), Image.resize and Image.transform (bilinear),
          Pillow JPEG encode; detection needs an ONNX runtime, and OpenCV's FaceDetectorYN on the
          Pillow-letterboxed pixels is the one in the venv.

Input: a JSON list of {"path": str, "landmarks": [[x, y] * 5 or 2]} (landmarks used without
--detector). Output: one JSON object on stdout with images/s.

    python scripts/bench/ingest_reference.py --variant opencv --items items.json [--detector yunet.onnx]
"""

import argparse
import io
import json
import math
import sys
import time

import cv2
import numpy as np
import webdataset as wds
from PIL import Image, ImageOps


def similarity(lm, size, ipd_ratio, eye_y):
    """2x3 forward matrix (source -> crop), same geometry as d2ae's align.rs.

    Coordinates are continuous with pixel centres at +0.5, as in align.rs; OpenCV's warpAffine
    samples at integer pixel centres, so the caller shifts by 0.5 on both sides.
    """
    (rx, ry), (lx, ly) = lm[0], lm[1]
    vx, vy = lx - rx, ly - ry
    ipd = math.hypot(vx, vy)
    k = ipd_ratio * size / ipd
    a, b = k * vx / ipd, -k * vy / ipd
    cx, cy = (rx + lx) / 2, (ry + ly) / 2
    tx = size / 2 - (a * cx - b * cy)
    ty = eye_y * size - (b * cx + a * cy)
    return np.array([[a, -b, tx], [b, a, ty]], dtype=np.float64)


def to_pixel_centres(m):
    """Continuous (centre at +0.5) forward matrix -> OpenCV's integer-centre convention."""
    m = m.copy()
    m[:, 2] += m[:, 0] * 0.5 + m[:, 1] * 0.5 - 0.5
    return m


def inverse(m):
    full = np.vstack([m, [0, 0, 1]])
    return np.linalg.inv(full)[:2]


def most_prominent(faces):
    """faces: rows [x, y, w, h, 10 landmarks, score]; the largest area x score."""
    if faces is None or len(faces) == 0:
        return None
    return max(faces, key=lambda f: f[2] * f[3] * f[14])


def fit_side(n, size):
    """d2ae's --detector-input fit: a multiple of 32 leaving >= 32 px of black after the photo."""
    return size if n >= size else min(size, (n + 32 + 31) // 32 * 32)


class Detector:
    """cv2.FaceDetectorYN at input `size` (long side): `square` letterboxes into size x size (the
    reference detections), `fit` uses the photo plus a 32-63 px black margin, like d2ae's default;
    one FaceDetectorYN per input shape, created on first use (not timed separately)."""

    def __init__(self, path, size=640, shape="square"):
        self.path, self.size, self.shape = path, size, shape
        self.nets = {}

    def canvas_size(self, nw, nh):
        """(width, height) of the model input for a photo resized to nw x nh."""
        if self.shape == "square":
            return self.size, self.size
        return fit_side(nw, self.size), fit_side(nh, self.size)

    def detect(self, bgr_letterboxed, scale_x, scale_y):
        h, w = bgr_letterboxed.shape[:2]
        net = self.nets.get((w, h))
        if net is None:
            net = self.nets[(w, h)] = cv2.FaceDetectorYN.create(self.path, "", (w, h), 0.6, 0.4, 5000)
        _, faces = net.detect(bgr_letterboxed)
        f = most_prominent(faces)
        if f is None:
            return None
        pts = np.array(f[4:14], dtype=np.float64).reshape(5, 2)
        pts[:, 0] *= scale_x
        pts[:, 1] *= scale_y
        return pts


def letterbox_size(w, h, size):
    r = min(size / w, size / h)
    return max(1, min(size, round(w * r))), max(1, min(size, round(h * r)))


def run_opencv(data, det, cfg):
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return None
    lm = cfg["lm"]
    if det is not None:
        h, w = img.shape[:2]
        nw, nh = letterbox_size(w, h, det.size)
        cw, ch = det.canvas_size(nw, nh)
        canvas = np.zeros((ch, cw, 3), np.uint8)
        canvas[:nh, :nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        lm = det.detect(canvas, w / nw, h / nh)
        if lm is None:
            return None
    size = cfg["size"]
    m = to_pixel_centres(similarity(lm, size, cfg["ipd_ratio"], cfg["eye_y"]))
    crop = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return buf.tobytes() if ok else None


def run_pil(data, det, cfg):
    img = Image.open(io.BytesIO(data))
    img = ImageOps.exif_transpose(img).convert("RGB")
    lm = cfg["lm"]
    if det is not None:
        w, h = img.size
        nw, nh = letterbox_size(w, h, det.size)
        canvas = Image.new("RGB", det.canvas_size(nw, nh))
        canvas.paste(img.resize((nw, nh), Image.BILINEAR), (0, 0))
        bgr = np.ascontiguousarray(np.asarray(canvas)[:, :, ::-1])
        lm = det.detect(bgr, w / nw, h / nh)
        if lm is None:
            return None
    size = cfg["size"]
    m = similarity(lm, size, cfg["ipd_ratio"], cfg["eye_y"])
    # Pillow's AFFINE takes the output -> input map in the continuous (+0.5) convention.
    inv = inverse(m)
    crop = img.transform((size, size), Image.AFFINE, data=tuple(inv.flatten()),
                         resample=Image.BILINEAR)
    out = io.BytesIO()
    crop.save(out, format="JPEG", quality=95)
    return out.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=["opencv", "pil"], required=True)
    ap.add_argument("--items", required=True, help="JSON list of {path, landmarks}")
    ap.add_argument("--detector", help="YuNet ONNX; detect instead of using the given landmarks")
    ap.add_argument("--detector-size", type=int, default=640, help="detector input long side")
    ap.add_argument("--detector-input", choices=["square", "fit"], default="square",
                    help="letterbox to the square, or photo + black margin (d2ae's default)")
    ap.add_argument("--min-seconds", type=float, default=3.0, help="repeat passes until this long")
    ap.add_argument("--size", type=int, default=235)
    ap.add_argument("--ipd-ratio", type=float, default=0.35)
    ap.add_argument("--eye-y", type=float, default=0.38)
    args = ap.parse_args()

    cv2.setNumThreads(1)
    items = json.load(open(args.items))
    photos = [(open(it["path"], "rb").read(), it["landmarks"]) for it in items]
    det = Detector(args.detector, args.detector_size, args.detector_input) if args.detector else None
    fn = run_opencv if args.variant == "opencv" else run_pil
    cfg = {"size": args.size, "ipd_ratio": args.ipd_ratio, "eye_y": args.eye_y}

    if det is not None:
        # Untimed pass: creates the detector for every input shape (as d2ae's bench warms its cache).
        for data, lm in photos:
            fn(data, det, dict(cfg, lm=lm))

    sink = io.BytesIO()
    done = failed = 0
    start = time.perf_counter()
    with wds.TarWriter(sink) as tar:
        while True:
            for i, (data, lm) in enumerate(photos):
                cfg["lm"] = lm
                jpg = fn(data, det, cfg)
                if jpg is None:
                    failed += 1
                    continue
                tar.write({"__key__": f"s{done:08d}", "jpg": jpg, "cls": i,
                           "json": {"identity": i, "source": str(i), "landmarks": lm}})
                done += 1
            if time.perf_counter() - start >= args.min_seconds:
                break
        seconds = time.perf_counter() - start
    json.dump({
        "variant": args.variant,
        "mode": "detector" if det else "landmarks",
        "images": done,
        "rejected": failed,
        "seconds": seconds,
        "images_per_s": done / seconds,
        "tar_bytes": sink.tell(),
    }, sys.stdout)
    print()


if __name__ == "__main__":
    main()
