"""``export``: a run (or a ``.keras`` file in one) to a TF Serving SavedModel or a TFLite file,
checked against the Keras model before it is published. See :mod:`usmtl.export`."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time

import numpy as np

from usmtl.errors import UsmtlError
from usmtl.export import artifacts
from usmtl.export.parity import TOLERANCES

FORMATS = ("savedmodel", "tflite")
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")


@dataclasses.dataclass
class ExportResult:
    path: str          # the SavedModel version folder, or the .tflite file
    sidecar: str       # folder of usmtl_export.json, config.yaml, parity.json
    report: dict       # parity.json
    passed: bool


@dataclasses.dataclass
class _Images:
    crops: np.ndarray
    labels: dict | None
    source: str


def check_arguments(fmt: str, quantize: str, manifest: str | None, images: int,
                    calibration_images: int, tolerance: float | None) -> None:
    """Every argument problem, before anything is loaded or written."""
    if fmt not in FORMATS:
        raise UsmtlError(f"Unknown export format; valid formats: {', '.join(FORMATS)}. "
                         f"Received: {fmt!r}")
    if quantize not in QUANTIZATIONS:
        raise UsmtlError(f"Unknown quantization; valid: {', '.join(QUANTIZATIONS)}. "
                         f"Received: {quantize!r}")
    if fmt == "savedmodel" and quantize != "none":
        raise UsmtlError(f"--quantize applies to --format tflite only; a SavedModel is float32. "
                         f"Received: --format savedmodel --quantize {quantize}")
    if quantize == "int8" and not manifest:
        raise UsmtlError("--quantize int8 needs --manifest: RoI crops of its training rows are the "
                         "representative dataset that calibrates the int8 ranges. "
                         "Received: no --manifest")
    if manifest and not os.path.isfile(manifest):
        raise UsmtlError(f"--manifest file not found. Received: {manifest}")
    if images < 1 or calibration_images < 1:
        raise UsmtlError(f"--images and --calibration-images must be >= 1. "
                         f"Received: {images} and {calibration_images}")
    if tolerance is not None and not tolerance > 0:
        raise UsmtlError(f"--tolerance must be > 0. Received: {tolerance}")


def _sample(indices: np.ndarray, count: int, seed: int) -> np.ndarray:
    if len(indices) <= count:
        return indices
    return np.sort(np.random.default_rng(seed).choice(indices, count, replace=False))


def _manifest_images(manifest_path: str, split_file: str, cfg, count: int, calibration: int,
                     seed: int, graph) -> tuple[_Images, np.ndarray | None]:
    """Parity crops (the run's test rows of the manifest, else all rows) with their labels,
    and calibration crops (its training rows, else all rows)."""
    from usmtl.data.manifest import read_manifest
    from usmtl.data.roi import load_roi
    from usmtl.data.splits import select_split_rows
    from usmtl.tasks import TaskGraph, label_table

    manifest = read_manifest(manifest_path)
    if len(manifest) == 0:
        raise UsmtlError(f"{manifest_path}: no rows. Received: an empty manifest")
    _, roles = select_split_rows(manifest, split_file, None, manifest_path)
    everything = np.arange(len(manifest))
    test, train = np.flatnonzero(roles == "test"), np.flatnonzero(roles == "train")
    if len(test):
        parity_rows, where = test, "the run's test split of"
    else:
        parity_rows, where = everything, "all rows of"
    calib_rows = train if len(train) else everything
    parity_rows = _sample(parity_rows, count, seed)
    calib_rows = _sample(calib_rows, calibration, seed + 1)

    paths, boxes = manifest.image_paths(), manifest.boxes()
    needed = sorted(set(parity_rows) | set(calib_rows))
    manifest.require_images(needed)
    size, data = cfg.data.image_size, cfg.data
    cache = {i: load_roi(paths[i], boxes[i], data.roi_margin, data.square_roi, size) for i in needed}
    crops = np.stack([cache[i] for i in parity_rows])
    subset = manifest.subset(np.isin(everything, parity_rows))
    present = graph.present(subset.frame.columns).tasks
    labels = label_table(subset, TaskGraph(present)) if present else None
    source = f"{where} {os.path.basename(manifest_path)}, {len(parity_rows)} of {len(manifest)} rows"
    return _Images(crops, labels, source), np.stack([cache[i] for i in calib_rows])


def _metadata(fmt, quantize, name, version, cfg, graph, run, model_file, mixed, tolerance) -> dict:
    import keras
    import tensorflow as tf

    import usmtl
    from usmtl.export.graph import MAX_SIDE
    from usmtl.run import run_dir_of_model

    size = cfg.data.image_size
    if fmt == "savedmodel":
        shape, resize = [None, None, None, 3], (
            f"in the graph: crops of any size (1..{MAX_SIDE} px a side; one size per request) "
            f"are resized to {size}x{size} like usmtl.data.roi.crop_roi (area when shrinking, "
            f"bilinear when enlarging, rounded to whole grey levels); send {size}x{size} crops "
            f"for exact parity with usmtl")
    else:
        shape, resize = [1, size, size, 3], f"none: send {size}x{size} crops"
    return {
        "usmtl_export": artifacts.SCHEMA_VERSION,
        "format": fmt, "quantize": quantize, "name": name, "version": version,
        "tasks": graph.names, "edges": [list(e) for e in graph.edges],
        "signature": "serving_default",
        "input": {"name": "image", "dtype": "uint8", "shape": shape, "image_size": size,
                  "channels": "RGB", "values": "0..255, the RoI crop (box + margin, squared)",
                  "resize": resize},
        "outputs": {t: "float32 probability, shape (batch,)" for t in graph.names},
        "roi": {"margin": cfg.data.roi_margin, "square": cfg.data.square_roi},
        "source": {"run": os.path.abspath(run), "run_dir": run_dir_of_model(model_file),
                   "model_file": os.path.abspath(model_file), "backbone": cfg.model.backbone,
                   "mixed_precision": mixed, "config_name": cfg.name},
        "tolerance": tolerance,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "versions": {"usmtl": usmtl.__version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__},
    }


def export(run: str, fmt: str, out: str, quantize: str = "none", manifest: str | None = None,
           name: str | None = None, version: int | None = None, images: int = 64,
           calibration_images: int = 100, tolerance: float | None = None,
           latency_runs: int = 30, threads: int | None = None, seed: int = 0,
           log=print) -> ExportResult:
    """Export a run directory or ``.keras`` file; returns where it went and its parity report.

    Args:
        run: a run directory (its ``checkpoints/best.keras``) or a ``.keras`` file in one.
        fmt: ``savedmodel`` (TF Serving layout ``out/<name>/<version>/``) or ``tflite``
            (``out/model.tflite``).
        quantize: TFLite only: ``none``, ``float16``, ``dynamic`` or ``int8``.
        manifest: images for the parity check (the run's test rows; else all rows) and, for
            int8, the representative dataset (the run's training rows); labelled rows add the
            AUC change. Without it, parity uses random uint8 images.
        images: parity images (sampled with ``seed`` when there are more).
        calibration_images: int8 representative images.
        tolerance: max |probability difference| allowed (default: :data:`TOLERANCES`).
        threads: LiteRT threads (default: every core).

    A SavedModel that fails parity is moved to ``<version>-parity-failed`` (TF Serving only
    loads integer folders); a failed TFLite export stays, with ``passed: false``. Either way
    ``ExportResult.passed`` is False and ``usmtl export`` exits with status 1.
    """
    check_arguments(fmt, quantize, manifest, images, calibration_images, tolerance)
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        raise UsmtlError(f"Exports need the TensorFlow Keras backend. "
                         f"Received: KERAS_BACKEND={os.environ['KERAS_BACKEND']}")
    from usmtl.config import save_config
    from usmtl.predict import find_run_files
    from usmtl.run import Run
    from usmtl.tasks import TaskGraph

    model_file, config_file = find_run_files(run)
    from usmtl.config import load_config

    cfg = load_config(config_file)
    name = artifacts.export_name(cfg.name, name)
    if fmt == "savedmodel":
        target, version = artifacts.savedmodel_target(out, name, version)
    else:
        target, version = artifacts.tflite_target(out), None
    tolerance = TOLERANCES[quantize if fmt == "tflite" else fmt] if tolerance is None else tolerance

    from usmtl.export.graph import float32_model, heads_model, write_savedmodel
    from usmtl.export.parity import compare_outputs, format_report, keras_probabilities
    from usmtl.export.runtime import median_latency, open_export
    from usmtl.predict import load_run

    model, cfg = load_run(run)
    graph = TaskGraph.from_config(cfg.tasks)
    size = cfg.data.image_size
    model32, mixed = float32_model(model, cfg)
    infer = heads_model(model32, graph.names)

    calibration = None
    if manifest:
        split_file = Run(os.path.dirname(config_file)).split_path
        parity_images, calibration = _manifest_images(manifest, split_file, cfg, images,
                                                      calibration_images, seed, graph)
    else:
        rng = np.random.default_rng(seed)
        parity_images = _Images(rng.integers(0, 256, (images, size, size, 3), dtype=np.uint8),
                                None, "random uint8 images; pass --manifest for real crops and AUCs")

    # Write into a hidden staging folder next to the target, then rename: TF Serving watches
    # the model base path and must never see a half-written version.
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".usmtl-export-", dir=parent)
    try:
        meta = _metadata(fmt, quantize, name, version, cfg, graph, run, model_file, mixed, tolerance)
        if fmt == "savedmodel":
            artifact = os.path.join(staging, "model")
            log(f"Writing the SavedModel ({'float32 copy of a mixed-precision model' if mixed else 'float32'})")
            write_savedmodel(infer, graph.names, size, artifact)
            sidecar = os.path.join(artifact, artifacts.SIDECAR_DIR)
        else:
            from usmtl.export.tflite import convert

            artifact = os.path.join(staging, "model")
            os.makedirs(artifact)
            log(f"Converting to TFLite (quantize {quantize})")
            blob = convert(infer, graph.names, size, quantize, calibration)
            with open(os.path.join(artifact, artifacts.TFLITE_FILE), "wb") as f:
                f.write(blob)
            sidecar = artifact
            if quantize == "int8":
                meta["calibration_images"] = int(len(calibration))
        os.makedirs(sidecar, exist_ok=True)
        artifacts.write_json(os.path.join(sidecar, artifacts.EXPORT_FILE), meta)
        save_config(cfg, os.path.join(sidecar, artifacts.CONFIG_FILE))

        log(f"Checking parity on {len(parity_images.crops)} images")
        exported = open_export(artifact, threads)
        crops = parity_images.crops
        reference = keras_probabilities(infer, crops, graph.names)
        got = exported.predict(crops, batch_size=exported.batch_limit() or 32)
        outputs = compare_outputs(reference, got, tolerance, parity_images.labels)
        one = crops[:1]
        export_ms, runs = exported.latency_ms(one, runs=latency_runs)
        keras_ms, _ = median_latency(lambda: model.predict_on_batch(one.astype(_dtype(model))),
                                     runs=latency_runs)
        kind, path_in_export = exported.kind, exported.artifact
        del exported
        report = {
            "artifact": "", "format": fmt, "quantize": quantize, "tolerance": tolerance,
            "passed": all(r["passed"] for r in outputs.values()),
            "bytes": artifacts.artifact_bytes(kind, path_in_export),
            "images": {"count": int(len(crops)), "source": parity_images.source},
            "outputs": outputs,
            "reference": {"model_file": os.path.abspath(model_file),
                          "bytes": os.path.getsize(model_file), "mixed_precision": mixed},
            "latency": {"export_ms": export_ms, "keras_ms": keras_ms, "runs": runs,
                        "runtime": (f"LiteRT, {threads or os.cpu_count()} thread(s)"
                                    if fmt == "tflite" else "SavedModel serving_default signature"),
                        "cpu_count": os.cpu_count(),
                        "note": "wall time on a shared CPU; other jobs may have been running"},
        }
        if mixed:
            source = keras_probabilities(model, crops, graph.names)
            report["reference"]["source_max_abs_diff"] = float(max(
                np.max(np.abs(source[t] - got[t])) for t in graph.names))

        if fmt == "savedmodel":
            final = target if report["passed"] else f"{target}-parity-failed"
            if os.path.exists(final) and not os.listdir(final):
                os.rmdir(final)
            if os.path.exists(final):
                raise UsmtlError(f"{final} appeared while exporting; nothing was replaced. "
                                 f"Received: {out}")
            report["artifact"] = os.path.abspath(final)
            artifacts.write_json(os.path.join(sidecar, artifacts.PARITY_FILE), report)
            os.replace(artifact, final)
            result_path, result_sidecar = final, os.path.join(final, artifacts.SIDECAR_DIR)
        else:
            if os.path.isdir(target) and not os.listdir(target):
                os.rmdir(target)
            report["artifact"] = os.path.abspath(os.path.join(target, artifacts.TFLITE_FILE))
            artifacts.write_json(os.path.join(sidecar, artifacts.PARITY_FILE), report)
            os.replace(artifact, target)
            result_path, result_sidecar = os.path.join(target, artifacts.TFLITE_FILE), target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(format_report(report))
    return ExportResult(result_path, result_sidecar, report, report["passed"])


def _dtype(model) -> str:
    from usmtl.export.graph import input_dtype

    return input_dtype(model)
