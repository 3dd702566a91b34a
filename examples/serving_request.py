"""Ask TF Serving for a usmtl model's probabilities over REST: a client needs numpy and Pillow,
not usmtl, not TensorFlow.

The model takes the RoI crop: the lesion's box widened by the export's margin on each side
and grown to a square (what ``usmtl_export.json`` says under ``roi``), as uint8 RGB pixels.
Resizing and normalisation happen in the graph; for exact parity with ``usmtl predict`` send
the crop already at the model's size (``input.image_size``) resized as usmtl does (OpenCV
area when shrinking, bilinear when enlarging) -- or send it at its own size, as this script
does, and the graph resizes it the same way (within one grey level of OpenCV).

Serve an export (``usmtl export RUN --format savedmodel --out exports``) with::

    docker run -p 8501:8501 --mount type=bind,source=$PWD/exports/quickstart,target=/models/quickstart \\
        -e MODEL_NAME=quickstart -t tensorflow/serving

then::

    python examples/serving_request.py scan.png --box 120,88,241,190 \\
        --export exports/quickstart/1 --url http://localhost:8501/v1/models/quickstart:predict

The request body is TF Serving's row format, one instance per crop::

    {"signature_name": "serving_default", "instances": [[[[r, g, b], ...], ...]]}

and the answer has one probability per task and instance::

    {"predictions": [{"malignancy": 0.91, "alnm": 0.34, "aln_ge_2": 0.12, ...}]}

All crops of one request must have the same size (they form one tensor). This script reads
8-bit images with Pillow; 16-bit PNG and DICOM need usmtl's own scaling
(``usmtl.data.io.read_image``) to match training. ``--save-request
FILE`` writes the body instead of sending it, for ``curl -d @FILE URL``.
"""

import argparse
import json
import os
import sys
import urllib.request

import numpy as np
from PIL import Image


def roi_crop(image: np.ndarray, box, margin: float, square: bool) -> np.ndarray:
    """The RoI crop of usmtl.data.roi: box + margin on each side, squared, zero-padded."""
    x_min, y_min, x_max, y_max = box
    cx, cy = (x_min + x_max) / 2.0, (y_min + y_max) / 2.0
    w, h = (x_max - x_min) * (1 + 2 * margin), (y_max - y_min) * (1 + 2 * margin)
    if square:
        w = h = max(w, h)
    w, h = max(1, int(round(w))), max(1, int(round(h)))
    x0, y0 = int(round(cx - w / 2.0)), int(round(cy - h / 2.0))
    out = np.zeros((h, w, 3), np.uint8)
    H, W = image.shape[:2]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def export_settings(path: str) -> dict:
    """``usmtl_export.json`` of a SavedModel version folder (or the file itself)."""
    if os.path.isdir(path):
        path = os.path.join(path, "assets.extra", "usmtl_export.json")
    with open(path) as f:
        return json.load(f)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", help="PNG/JPEG/BMP ultrasound image")
    parser.add_argument("--box", required=True, help="x_min,y_min,x_max,y_max (max exclusive)")
    parser.add_argument("--export", required=True,
                        help="the export's version folder, or its usmtl_export.json")
    parser.add_argument("--url", default="http://localhost:8501/v1/models/usmtl:predict")
    parser.add_argument("--save-request", metavar="FILE", help="write the JSON body, send nothing")
    args = parser.parse_args(argv)

    settings = export_settings(args.export)
    box = [int(v) for v in args.box.split(",")]
    image = np.asarray(Image.open(args.image).convert("RGB"))
    crop = roi_crop(image, box, settings["roi"]["margin"], settings["roi"]["square"])
    body = json.dumps({"signature_name": "serving_default", "instances": [crop.tolist()]})
    if args.save_request:
        with open(args.save_request, "w") as f:
            f.write(body)
        print(f"Wrote {args.save_request}: one {crop.shape[1]}x{crop.shape[0]} crop")
        return 0
    request = urllib.request.Request(args.url, data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.load(response)
    probabilities = answer["predictions"][0]
    for task in settings["tasks"]:  # head order, parents before children
        print(f"{task:<12} {probabilities[task]:.4f}")
    for parent, child in settings["edges"]:
        if probabilities[child] >= 0.5 > probabilities[parent]:
            print(f"warning: {child} is positive while {parent} is not (hierarchy violation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
