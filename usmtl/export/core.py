"""``export``: a run (or a ``.keras`` file in one) to any export format registered in
:mod:`usmtl.formats` (a TF Serving SavedModel, a TFLite file...), checked against the Keras
model before it is published. See :mod:`usmtl.export`.

:func:`export` is a short driver over the format's object, in named phases: check the
arguments (:func:`check_arguments`), open the run (:func:`open_run`), choose the images
(:func:`choose_images`), write (:func:`write_export`), load back and compare
(:func:`check_parity`), publish (:func:`publish`). No phase knows a format by name.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import tempfile
import time

import numpy as np

from usmtl.errors import UsmtlError
from usmtl.export import artifacts


# What an export of a run trained with data.inpaint_marks says (usmtl_export.json, the log).
INPAINT_NOTE = ("the run was trained with data.inpaint_marks: the exported graph does NOT "
                "inpaint; clients must inpaint burned-in marks on the whole image before "
                "cropping (usmtl.data.marks.inpaint_marks), or the model sees inputs unlike "
                "its training images")


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


@dataclasses.dataclass
class Source:
    """The Keras model an export is made from (opened through :func:`usmtl.formats.open_model`;
    the model is loaded on first use)."""

    run: str
    opened: object          # usmtl.formats.OpenedModel of the keras format

    cfg = property(lambda self: self.opened.cfg)
    run_dir = property(lambda self: self.opened.run_dir)
    model_file = property(lambda self: self.opened.found.artifact)
    runtime = property(lambda self: self.opened.model)      # usmtl.formats.keras_run.KerasModel
    model = property(lambda self: self.opened.model.keras)  # the keras.Model

    @functools.cached_property
    def graph(self):
        from usmtl.tasks import TaskGraph

        return TaskGraph.from_config(self.cfg.tasks)

    @functools.cached_property
    def _float32(self):
        from usmtl.export.graph import float32_model, heads_model

        model32, mixed = float32_model(self.model, self.cfg)
        return heads_model(model32, self.graph.names), mixed

    infer = property(lambda self: self._float32[0], doc="the float32 heads model exported")
    mixed = property(lambda self: self._float32[1], doc="the run is mixed precision")


@dataclasses.dataclass
class Staged:
    """An export written into the staging folder: ``folder`` becomes the published one."""

    folder: str
    artifact: str
    sidecar: str


def check_arguments(fmt: str, quantize: str, manifest: str | None, images: int,
                    calibration_images: int, tolerance: float | None):
    """Phase 0: every argument problem, before anything is loaded or written. Returns the
    export format (:class:`usmtl.formats.Format`) named ``fmt``."""
    from usmtl import formats

    form = formats.export_format(fmt)
    valid = formats.quantizations()
    if quantize not in valid:
        raise UsmtlError(f"Unknown quantization; valid: {', '.join(valid)}. Received: {quantize!r}")
    if quantize not in form.quantizations:
        takers = " or ".join(f.name for f in formats.export_formats() if quantize in f.quantizations)
        note = f"; {form.quantize_note}" if form.quantize_note else ""
        raise UsmtlError(f"--quantize {quantize} applies to --format {takers} only{note}. "
                         f"Received: --format {fmt} --quantize {quantize}")
    form.check(quantize, manifest)
    if manifest and not os.path.isfile(manifest):
        raise UsmtlError(f"--manifest file not found. Received: {manifest}")
    if images < 1 or calibration_images < 1:
        raise UsmtlError(f"--images and --calibration-images must be >= 1. "
                         f"Received: {images} and {calibration_images}")
    if tolerance is not None and not tolerance > 0:
        raise UsmtlError(f"--tolerance must be > 0. Received: {tolerance}")
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        raise UsmtlError(f"Exports need the TensorFlow Keras backend. "
                         f"Received: KERAS_BACKEND={os.environ['KERAS_BACKEND']}")
    return form


def _sample(indices: np.ndarray, count: int, seed: int) -> np.ndarray:
    if len(indices) <= count:
        return indices
    return np.sort(np.random.default_rng(seed).choice(indices, count, replace=False))


def _manifest_images(manifest_path: str, split_file: str, cfg, count: int, calibration: int,
                     seed: int, graph) -> tuple[_Images, np.ndarray | None]:
    """Parity crops (the run's test rows of the manifest, else all rows) with their labels,
    and calibration crops (its training rows, else all rows)."""
    from usmtl.data.crops import Crops
    from usmtl.data.manifest import read_manifest
    from usmtl.data.prepare import require_usable
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

    needed = sorted(set(parity_rows) | set(calib_rows))
    require_usable(manifest, rows=needed, warn=None)  # check's checks, the images decoded
    read = Crops.from_manifest(manifest, needed, cfg.data).load()  # image files or a pack
    cache = dict(zip(needed, read))
    crops = np.stack([cache[i] for i in parity_rows])
    subset = manifest.subset(np.isin(everything, parity_rows))
    present = graph.present(subset.frame.columns).tasks
    labels = label_table(subset, TaskGraph(present)) if present else None
    source = f"{where} {os.path.basename(manifest_path)}, {len(parity_rows)} of {len(manifest)} rows"
    return _Images(crops, labels, source), np.stack([cache[i] for i in calib_rows])


def open_run(run: str) -> Source:
    """Phase 1: the run (or ``.keras`` file) through the one door; an export is refused."""
    from usmtl.formats import open_model

    return Source(run, open_model(run).require_keras("an export is made from a Keras model"))


def choose_images(source: Source, manifest: str | None, count: int, calibration: int,
                  seed: int) -> tuple[_Images, np.ndarray | None]:
    """Phase 2: parity crops (and calibration crops) from the manifest, else random images."""
    from usmtl.run import Run

    if manifest:
        split = Run(source.run_dir).split_path if source.run_dir else None  # CV ensembles: none
        return _manifest_images(manifest, split, source.cfg, count,
                                calibration, seed, source.graph)
    size = source.cfg.data.image_size
    rng = np.random.default_rng(seed)
    return _Images(rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8), None,
                   "random uint8 images; pass --manifest for real crops and AUCs"), None


def _metadata(form, quantize, name, version, source: Source, tolerance) -> dict:
    """``usmtl_export.json``."""
    import keras
    import tensorflow as tf

    from usmtl._version import __version__
    from usmtl.run import run_dir_of_model

    cfg, graph, size = source.cfg, source.graph, source.cfg.data.image_size
    shape, resize = form.input_description(size)
    return {
        "usmtl_export": artifacts.SCHEMA_VERSION,
        "format": form.name, "quantize": quantize, "name": name, "version": version,
        "tasks": graph.names, "edges": [list(e) for e in graph.edges],
        "signature": "serving_default",
        "input": {"name": "image", "dtype": "uint8", "shape": shape, "image_size": size,
                  "channels": "RGB", "values": "0..255, the RoI crop (box + margin, squared)",
                  "resize": resize},
        "outputs": {t: "float32 probability, shape (batch,)" for t in graph.names},
        "roi": {"margin": cfg.data.roi_margin, "square": cfg.data.square_roi},
        # The graph cannot inpaint: a client must, when the model was trained on inpainted
        # images (usmtl.data.marks; usmtl predict on this export does it from config.yaml).
        "inpaint_marks": {"trained_with": bool(cfg.data.inpaint_marks), "in_graph": False,
                          "note": INPAINT_NOTE if cfg.data.inpaint_marks else ""},
        # usmtl calibrate's map stays outside the graph (the outputs are the heads' own
        # scores); usmtl predict on this export applies this copy.
        "calibration": source.opened.calibration,
        "calibration_in_graph": False,
        "source": {"run": os.path.abspath(source.run), "run_dir": run_dir_of_model(source.model_file),
                   "model_file": os.path.abspath(source.model_file), "backbone": cfg.model.backbone,
                   "mixed_precision": source.mixed, "config_name": cfg.name},
        "tolerance": tolerance,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "versions": {"usmtl": __version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__},
    }


def _staging_folder(target: str) -> str:
    """A hidden folder next to the target: TF Serving watches the model base path and must
    never see a half-written version, so an export is written there and then renamed."""
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=".usmtl-export-", dir=parent)


def write_export(form, job, staging: str, cfg) -> Staged:
    """Phase 3: the format writes the model into ``staging``; then its side files
    (``usmtl_export.json``, ``config.yaml``)."""
    from usmtl.config import save_config

    folder = os.path.join(staging, "model")
    artifact, sidecar = form.write(job, folder)
    os.makedirs(sidecar, exist_ok=True)
    artifacts.write_json(os.path.join(sidecar, artifacts.EXPORT_FILE), job.meta)
    save_config(cfg, os.path.join(sidecar, artifacts.CONFIG_FILE))
    return Staged(folder, artifact, sidecar)


def check_parity(form, staged: Staged, source: Source, images: _Images, quantize: str,
                 tolerance: float, latency_runs: int, threads: int | None) -> dict:
    """Phase 4: load the export back through the one door and compare it with the Keras
    model on the same crops; latency of one image of both. Returns ``parity.json``."""
    from usmtl.export.parity import compare_outputs, keras_probabilities
    from usmtl.formats import open_model

    opened = open_model(staged.folder, threads=threads)  # the folder that will be published
    if opened.format is not form:
        raise UsmtlError(f"{staged.folder} was written as {form.name} but opens as "
                         f"{opened.format.name}. Received: {form!r}")
    exported, crops, names = opened.model, images.crops, source.graph.names
    reference = keras_probabilities(source.infer, crops, names)
    got = exported.predict(crops, batch_size=exported.batch_limit() or 32)
    outputs = compare_outputs(reference, got, tolerance, images.labels)
    export_ms, runs = exported.latency_ms(crops[:1], runs=latency_runs)
    keras_ms, _ = source.runtime.latency_ms(crops[:1], runs=latency_runs)
    report = {
        "artifact": "", "format": form.name, "quantize": quantize, "tolerance": tolerance,
        "passed": all(r["passed"] for r in outputs.values()),
        "bytes": form.artifact_bytes(exported.artifact),
        "images": {"count": int(len(crops)), "source": images.source},
        "outputs": outputs,
        "reference": {"model_file": os.path.abspath(source.model_file),
                      "bytes": os.path.getsize(source.model_file), "mixed_precision": source.mixed},
        "latency": {"export_ms": export_ms, "keras_ms": keras_ms, "runs": runs,
                    "runtime": exported.runtime_label, "cpu_count": os.cpu_count(),
                    "note": "wall time on a shared CPU; other jobs may have been running"},
    }
    if source.mixed:
        original = keras_probabilities(source.model, crops, names)
        report["reference"]["source_max_abs_diff"] = float(max(
            np.max(np.abs(original[t] - got[t])) for t in names))
    return report


def _moved(path: str, folder: str, final: str) -> str:
    """Where ``path`` (inside ``folder``) is once ``folder`` is renamed ``final``."""
    relative = os.path.relpath(path, folder)
    return final if relative == "." else os.path.join(final, relative)


def publish(form, staged: Staged, target: str, report: dict, out: str) -> ExportResult:
    """Phase 5: write ``parity.json`` and rename the staging folder to where the format
    publishes it (which may depend on parity); never replaces anything."""
    final = form.published(target, report["passed"])
    if os.path.isdir(final) and not os.listdir(final):
        os.rmdir(final)
    if os.path.exists(final):
        raise UsmtlError(f"{final} appeared while exporting; nothing was replaced. "
                         f"Received: {out}")
    report["artifact"] = os.path.abspath(_moved(staged.artifact, staged.folder, final))
    artifacts.write_json(os.path.join(staged.sidecar, artifacts.PARITY_FILE), report)
    os.replace(staged.folder, final)
    return ExportResult(_moved(staged.artifact, staged.folder, final),
                        _moved(staged.sidecar, staged.folder, final), report, report["passed"])


def export(run: str, fmt: str, out: str, quantize: str = "none", manifest: str | None = None,
           name: str | None = None, version: int | None = None, images: int = 64,
           calibration_images: int = 100, tolerance: float | None = None,
           latency_runs: int = 30, threads: int | None = None, seed: int = 0,
           log=print) -> ExportResult:
    """Export a run directory or ``.keras`` file; returns where it went and its parity report.

    Args:
        run: a run directory (its ``checkpoints/best.keras``) or a ``.keras`` file in one.
        fmt: a registered export format (:mod:`usmtl.formats`): ``savedmodel`` (TF Serving
            layout ``out/<name>/<version>/``) or ``tflite`` (``out/model.tflite``)...
        quantize: one of the format's quantizations (TFLite: ``none``, ``float16``,
            ``dynamic`` or ``int8``; a SavedModel is ``none``).
        manifest: images for the parity check (the run's test rows; else all rows) and, for
            int8, the representative dataset (the run's training rows); labelled rows add the
            AUC change. Without it, parity uses random uint8 images.
        images: parity images (sampled with ``seed`` when there are more).
        calibration_images: int8 representative images.
        tolerance: max |probability difference| allowed (default: the format's
            :attr:`~usmtl.formats.Format.tolerances`).
        threads: LiteRT threads (default: every core).

    A SavedModel that fails parity is moved to ``<version>-parity-failed`` (TF Serving only
    loads integer folders); a failed TFLite export stays, with ``passed: false``. Either way
    ``ExportResult.passed`` is False and ``usmtl export`` exits with status 1.

    Returns:
        An :class:`ExportResult`: where the export went, its parity report, ``passed``.

    Raises:
        UsmtlError: an unknown format or quantization, int8 without a manifest, a run that
            cannot be opened, a target that appeared meanwhile (nothing is ever replaced).

    Example:
        >>> from usmtl.export import export
        >>> result = export("runs/quickstart", "tflite", "exports/q8", quantize="int8",
        ...                 manifest="demo/manifest.csv")  # doctest: +SKIP
        >>> result.passed, result.parity["max_abs_diff"]  # doctest: +SKIP
    """
    from usmtl.export.parity import format_report
    from usmtl.formats import WriteJob

    form = check_arguments(fmt, quantize, manifest, images, calibration_images, tolerance)
    source = open_run(run)
    if source.cfg.data.inpaint_marks:
        log(f"WARNING: {INPAINT_NOTE}")
    if source.opened.calibration:
        from usmtl.evaluation.calibration_maps import describe

        log(f"Note: the run's scores are {describe(source.opened.calibration)}; the exported "
            f"graph returns the heads' raw scores. usmtl_export.json carries the calibration: "
            f"usmtl predict on the export applies it, other clients must (p -> "
            f"sigmoid(a*logit(p)+b), or sigmoid(logit(p)/T), per task).")
    name = artifacts.export_name(source.cfg.name, name)
    target, version = form.target(out, name, version)
    tolerance = form.tolerances[quantize] if tolerance is None else tolerance
    parity_images, calibration = choose_images(source, manifest, images, calibration_images, seed)
    staging = _staging_folder(target)
    try:
        meta = _metadata(form, quantize, name, version, source, tolerance)
        job = WriteJob(source.infer, source.graph.names, source.cfg.data.image_size, quantize,
                       calibration, source.mixed, meta, log)
        staged = write_export(form, job, staging, source.cfg)
        log(f"Checking parity on {len(parity_images.crops)} images")
        report = check_parity(form, staged, source, parity_images, quantize, tolerance,
                              latency_runs, threads)
        result = publish(form, staged, target, report, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(format_report(report))
    return result
