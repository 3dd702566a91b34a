"""Synthetic breast-ultrasound phantoms with known truth, for tests and demos.

These are synthetic images, not real patient data: nothing learnt from them says anything
about real ultrasound. They exist so that the whole pipeline (manifest, RoI crop, multi-task
training, evaluation) can run end to end in seconds on a CPU, with labels whose generative
cause is known and written next to them in the manifest.

Each image is a B-mode-like picture: layered breast tissue (skin, subcutaneous fat,
fibroglandular bands, pectoral muscle) under multiplicative Rayleigh speckle, log compression
and depth attenuation, with one hypoechoic mass drawn with textbook BI-RADS features:

- benign: smooth oval, wider than tall (parallel), circumscribed, homogeneous, posterior
  acoustic enhancement;
- malignant: irregular, spiculated margin, taller than wide, heterogeneous with
  microcalcifications, echogenic halo, posterior acoustic shadowing.

Among malignant patients the chance of axillary lymph-node metastasis (ALNM) rises
logistically with lesion size and margin irregularity, and the number of metastatic nodes
grows with size. ALNM only occurs with malignancy. As in the paper's data (Li, Guo et al.
2022), the ALN labels (``alnm``, ``aln_count``) are given for malignant masses only and left
empty for benign ones, which have no axillary surgery. Size is mostly lost once a box RoI is
cropped and resized, so ALNM is only partly predictable from the crop, malignancy almost
fully. A patient's images are views of one lesion (new speckle and tissue, slight rotation
and scale, another position in the frame).

Example:
    >>> from usmtl.data.phantoms import make_phantoms
    >>> frame = make_phantoms("phantoms", n_patients=20, progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import numbers
import os

import cv2
import numpy as np
import pandas as pd

from usmtl.data.manifest import Box, write_manifest, write_voc_box

MALIGNANT_RATE = 0.4
RADIUS_RANGE = (0.08, 0.19)  # mean lesion radius as a fraction of ``size``
MALIGNANT_IRREGULARITY = (0.1, 1.0)
BOX_JITTER = 3  # pixels each box edge may move away from the lesion's true bounding box
DYNAMIC_RANGE_DB = 42.0


@dataclasses.dataclass(frozen=True)
class _Lesion:
    """One patient's lesion: the truth shared by all of that patient's views."""

    malignant: int
    alnm: int
    aln_count: int
    radius: float  # fraction of ``size``
    aspect: float  # width / height before rotation
    irregularity: float  # 0 smooth .. 1 strongly spiculated
    angle: float  # tilt of the long axis, radians
    harmonics: np.ndarray  # (n, 3): order, amplitude, phase of the lobulated margin
    spikes: np.ndarray  # (n, 3): angle, height, angular width of the spiculations
    echo: float  # mean interior reflectivity
    posterior: float  # > 0 enhancement, < 0 shadowing (log gain per lesion thickness)
    halo: float  # echogenic rim strength, 0 for none
    calcifications: int  # number of echogenic foci inside the lesion


def _sample_lesion(rng: np.random.Generator) -> _Lesion:
    """Draw a patient's lesion and labels from the generative model described above."""
    malignant = int(rng.random() < MALIGNANT_RATE)
    radius = float(rng.uniform(*RADIUS_RANGE))
    size_z = (radius - np.mean(RADIUS_RANGE)) / (np.ptp(RADIUS_RANGE) / np.sqrt(12))
    if malignant:
        # Every suspicious feature scales with one irregularity, so that the features ALNM
        # depends on can be seen; some cancers are nearly circumscribed or parallel.
        irregularity = float(rng.uniform(*MALIGNANT_IRREGULARITY))
        aspect = float(rng.uniform(0.6, 1.0) if rng.random() < 0.75 else rng.uniform(1.0, 1.5))
        n_spikes = int(round(4 + 16 * irregularity)) + int(rng.integers(-2, 3))
        spikes = np.column_stack([
            rng.uniform(0, 2 * np.pi, n_spikes),
            irregularity * rng.uniform(0.3, 0.8, n_spikes),
            rng.uniform(0.02, 0.05, n_spikes),
        ])
        harmonic_scale = 0.2 * irregularity
        irr_z = (irregularity - np.mean(MALIGNANT_IRREGULARITY)) / (
            np.ptp(MALIGNANT_IRREGULARITY) / np.sqrt(12))
        alnm = int(rng.random() < 1 / (1 + np.exp(-(0.8 * size_z + 2.5 * irr_z))))
        extra = int(rng.poisson(0.8 * np.exp(0.8 * size_z))) if alnm else 0
        echo = float(rng.uniform(0.05, 0.09))
        posterior = -float(rng.uniform(0.8, 1.2) * (0.3 + 1.0 * irregularity))
        halo = float(rng.uniform(0.8, 1.2) * (0.5 + 2.0 * irregularity))
        calcifications = int(rng.poisson(1 + 5 * irregularity))
    else:
        # Mostly oval and parallel; a few gently lobulated or round, some without enhancement.
        lobulated = rng.random() < 0.15
        irregularity = float(rng.uniform(0.1, 0.3) if lobulated else rng.uniform(0.0, 0.1))
        aspect = float(rng.uniform(1.3, 2.0) if rng.random() < 0.9 else rng.uniform(0.9, 1.3))
        spikes = np.zeros((0, 3))
        harmonic_scale = 0.05 + 0.2 * irregularity
        alnm, extra = 0, 0
        echo = float(rng.uniform(0.03, 0.06))
        posterior = float(rng.uniform(0.0, 0.9))
        halo = 0.0  # a thin echogenic capsule is drawn instead
        calcifications = 0
    orders = np.arange(2, 13)
    harmonics = np.column_stack([
        orders,
        harmonic_scale * rng.uniform(0.2, 1.0, len(orders)) / np.sqrt(orders - 1),
        rng.uniform(0, 2 * np.pi, len(orders)),
    ])
    return _Lesion(
        malignant=malignant, alnm=alnm, aln_count=(1 + extra) if alnm else 0, radius=radius,
        aspect=aspect, irregularity=irregularity, angle=float(rng.normal(0, 0.12)),
        harmonics=harmonics, spikes=spikes, echo=echo, posterior=posterior, halo=halo,
        calcifications=calcifications,
    )


def _boundary(lesion: _Lesion, phi: np.ndarray) -> np.ndarray:
    """Normalised boundary radius (1 = the ellipse) at lesion-frame angles ``phi``."""
    b = np.ones_like(phi)
    for order, amplitude, phase in lesion.harmonics:
        b += amplitude * np.cos(order * phi + phase)
    for angle, height, width in lesion.spikes:
        d = np.angle(np.exp(1j * (phi - angle)))
        b += height * np.exp(-0.5 * (d / width) ** 2)
    return b


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Zero-mean, unit-ish smooth random field with features about ``cell`` pixels wide."""
    coarse = rng.standard_normal((max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)))
    return cv2.resize(coarse.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)


def _tissue(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Reflectivity of layered breast tissue: skin, fat, glandular bands, pectoral muscle."""
    y = np.arange(h, dtype=np.float32)[:, None] / h
    x = np.arange(w, dtype=np.float32)[None, :] / w

    def wave(amp: float, cell: float) -> np.ndarray:  # a wavy layer boundary, one row
        return amp * _smooth_noise(rng, 1, w, cell)[0][None, :]

    def soft(t: np.ndarray) -> np.ndarray:  # smooth step between layers
        return 1 / (1 + np.exp(-t / 0.012))

    skin_top = rng.uniform(0.02, 0.05)
    fat_bottom = rng.uniform(0.15, 0.3) + wave(0.03, w / 4)
    muscle_top = rng.uniform(0.82, 0.95) + wave(0.02, w / 3)

    fat = 0.12 + 0.04 * _smooth_noise(rng, h, w, 10)
    period = rng.uniform(0.05, 0.1)
    bands = np.sin(2 * np.pi * (y + wave(0.04, w / 5) + 0.02 * _smooth_noise(rng, h, w, 12))
                   / period + rng.uniform(0, 2 * np.pi))
    gland = 0.55 + 0.2 * bands + 0.15 * _smooth_noise(rng, h, w, 14)
    slope = rng.uniform(-0.4, 0.4)
    fibres = y - slope * x + 0.01 * _smooth_noise(rng, h, w, 8)
    muscle = 0.25 + 0.12 * np.sin(2 * np.pi * fibres / 0.05)

    refl = fat + (gland - fat) * soft(y - fat_bottom)
    refl = refl + (muscle - refl) * soft(y - muscle_top)
    refl = refl + 1.2 * np.exp(-0.5 * ((y - skin_top) / 0.008) ** 2)
    refl = refl * soft(y - skin_top + 0.015)  # coupling gel above the skin is anechoic
    return np.clip(refl, 0.02, None).astype(np.float32)


def _speckle(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Rayleigh speckle: envelope of a smoothed complex Gaussian field, laterally elongated
    like a real point-spread function, scaled to unit mean power."""
    re = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 1.3, sigmaY=0.7)
    im = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 1.3, sigmaY=0.7)
    envelope = np.sqrt(re * re + im * im)
    return envelope / np.sqrt(np.mean(envelope ** 2))


def _render(rng: np.random.Generator, lesion: _Lesion, size: int, view: int) -> dict:
    """Draw one view of ``lesion``: returns the uint8 image, its box and per-view truth."""
    h = int(round(size * rng.uniform(0.85, 1.15)))
    w = int(round(size * rng.uniform(0.85, 1.15)))
    scale = 1.0 if view == 0 else float(rng.uniform(0.9, 1.1))
    angle = lesion.angle + (0.0 if view == 0 else float(rng.normal(0, 0.1)))
    r = lesion.radius * size * scale
    rx, ry = r * np.sqrt(lesion.aspect), r / np.sqrt(lesion.aspect)
    cos, sin = np.cos(angle), np.sin(angle)

    # Extent of the lesion around its centre, to place it wholly inside the tissue.
    phi = np.linspace(0, 2 * np.pi, 2048, endpoint=False)
    b = _boundary(lesion, phi)  # a lookup table: evaluating it per pixel would be slow
    ex = b * rx * np.cos(phi) * cos - b * ry * np.sin(phi) * sin
    ey = b * rx * np.cos(phi) * sin + b * ry * np.sin(phi) * cos
    margin = BOX_JITTER + 2
    lo_x, hi_x = margin - ex.min(), w - margin - ex.max()
    lo_y, hi_y = max(margin - ey.min(), 0.3 * h), min(h - margin - ey.max(), 0.72 * h)
    cx = float(rng.uniform(lo_x, hi_x)) if hi_x > lo_x else w / 2
    cy = float(rng.uniform(lo_y, hi_y)) if hi_y > lo_y else (h - ey.min() - ey.max()) / 2

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    u = (dx * cos + dy * sin) / rx
    v = (-dx * sin + dy * cos) / ry
    rho = np.sqrt(u * u + v * v)
    bound = np.interp(np.arctan2(v, u), phi, b, period=2 * np.pi)
    edge = (2.0 if lesion.malignant else 0.6) / r  # edge width in normalised units
    mask = np.clip((bound - rho) / edge + 0.5, 0, 1)

    refl = _tissue(rng, h, w)
    inside = lesion.echo * (1 + (0.6 if lesion.malignant else 0.15) * _smooth_noise(rng, h, w, 4))
    refl = refl * (1 - mask) + np.clip(inside, 0.02, None) * mask
    if lesion.malignant:
        width = 0.15 + 0.15 * lesion.irregularity
        ring = np.exp(-0.5 * ((rho - bound - width / 2) / (width / 2)) ** 2) * (rho > bound)
        patchy = np.clip(1 + 0.4 * _smooth_noise(rng, h, w, 4), 0, None)
        refl = refl * (1 + lesion.halo * ring * patchy)
    else:  # the thin echogenic capsule of a circumscribed mass
        refl = refl + 0.5 * np.exp(-0.5 * ((rho - bound) * r / 0.8) ** 2)
    for _ in range(lesion.calcifications):
        t, s = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 0.6))
        px = cx + s * (rx * np.cos(t) * cos - ry * np.sin(t) * sin)
        py = cy + s * (rx * np.cos(t) * sin + ry * np.sin(t) * cos)
        refl = refl + 2.5 * np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / 1.2)

    # Posterior features: gain along each beam grows with the lesion thickness crossed.
    crossed = np.cumsum(mask, axis=0) / (2 * ry)
    gain = np.exp(lesion.posterior * cv2.GaussianBlur(crossed, (0, 0), 1.5))
    depth = np.exp(-rng.uniform(0.4, 0.9) * yy / h)
    echo = refl * gain * depth * _speckle(rng, h, w)

    # Log compression to the display's dynamic range (gain varies), slight smoothing, 8 bits.
    db = 20 * np.log10(echo + 1e-6)
    top = rng.uniform(2, 6)
    image = np.clip((db - top) / DYNAMIC_RANGE_DB + 1, 0, 1)
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.6)
    image = np.round(255 * image).astype(np.uint8)

    box = Box.from_mask(mask >= 0.5)
    jitter = rng.integers(-BOX_JITTER, BOX_JITTER + 1, 4)
    box = Box(max(0, box.x_min + int(jitter[0])), max(0, box.y_min + int(jitter[1])),
              min(w, box.x_max + int(jitter[2])), min(h, box.y_max + int(jitter[3])))
    return {"image": image, "box": box, "lesion_radius": r, "center_x": cx, "center_y": cy,
            "angle_deg": float(np.degrees(angle))}


def make_phantoms(out_dir: str | os.PathLike, n_patients: int = 200, images_per_patient=(1, 2),
                  size: int = 160, seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """Write a synthetic phantom data set and return its manifest.

    Writes ``out_dir/images/*.png`` (grey, about ``size`` pixels a side, +-15%),
    ``out_dir/annotations/*.xml`` (LabelImg Pascal VOC box per image) and
    ``out_dir/manifest.csv`` with the labels ``malignant``, ``alnm``, ``aln_count`` (the last
    two empty for benign masses) and the
    generative truth (``lesion_radius`` in pixels, ``lesion_aspect`` width/height,
    ``irregularity`` 0..1, ``center_x``, ``center_y``, ``angle_deg``, ``view``). Paths in the
    manifest are relative to ``out_dir``. ``images_per_patient`` is an int or an inclusive
    (low, high) range. The same ``seed`` gives the same files, byte for byte.
    """
    if isinstance(images_per_patient, numbers.Integral):
        images_per_patient = (images_per_patient, images_per_patient)
    low, high = (int(n) for n in images_per_patient)
    if n_patients < 1 or low < 1 or high < low or size < 32:
        raise ValueError(f"need n_patients >= 1, 1 <= low <= high images per patient and "
                         f"size >= 32. Received: n_patients={n_patients}, "
                         f"images_per_patient={images_per_patient}, size={size}")
    for folder in ("images", "annotations"):
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    patients = range(n_patients)
    if progress:
        from tqdm.auto import tqdm

        patients = tqdm(patients, desc="phantoms", unit="patient")
    streams = np.random.SeedSequence(seed).spawn(n_patients)
    digits = max(4, len(str(n_patients)))
    rows = []
    for p in patients:
        rng = np.random.default_rng(streams[p])
        lesion = _sample_lesion(rng)
        patient_id = f"P{p + 1:0{digits}d}"
        for view in range(int(rng.integers(low, high + 1))):
            drawn = _render(rng, lesion, size, view)
            name = f"{patient_id}_v{view + 1}"
            image_rel, xml_rel = f"images/{name}.png", f"annotations/{name}.xml"
            image_path = os.path.join(out_dir, image_rel)
            if not cv2.imwrite(image_path, drawn["image"]):
                raise OSError(f"{image_path}: cannot write the image")
            h, w = drawn["image"].shape
            write_voc_box(os.path.join(out_dir, xml_rel), image_rel, h, w, drawn["box"])
            rows.append({
                "image": image_rel, "patient_id": patient_id, "malignant": lesion.malignant,
                # Benign masses have no axillary surgery: their ALN status is unknown.
                "alnm": lesion.alnm if lesion.malignant else None,
                "aln_count": lesion.aln_count if lesion.malignant else None,
                "annotation": xml_rel,
                "view": view + 1, "lesion_radius": round(drawn["lesion_radius"], 2),
                "lesion_aspect": round(lesion.aspect, 3),
                "irregularity": round(lesion.irregularity, 3),
                "center_x": round(drawn["center_x"], 1), "center_y": round(drawn["center_y"], 1),
                "angle_deg": round(drawn["angle_deg"], 1),
            })
    frame = pd.DataFrame(rows)
    # Nullable integers: an unknown ALN status is written as an empty cell, a count as "3".
    frame[["alnm", "aln_count"]] = frame[["alnm", "aln_count"]].astype("Int64")
    write_manifest(frame, os.path.join(out_dir, "manifest.csv"))
    return frame
