"""The parity report every export writes (``parity.json``) and prints.

It compares the exported model, loaded back from disk, with the Keras model it came from
(its float32 copy for a mixed-precision run) on the same uint8 RoI crops at the model's size:

- per output: the max and mean absolute difference of the probabilities, against the
  format's tolerance (:attr:`usmtl.formats.Format.tolerances`), pass or fail;
- with a labelled manifest: each task's AUC from Keras and from the export, and the change;
- the artifact's size, and the median latency of one image on this CPU (the SavedModel
  signature, or LiteRT for ``.tflite``) next to Keras' ``predict_on_batch``.
"""

from __future__ import annotations

import math

import numpy as np


def tolerances() -> dict:
    """The default parity tolerances (max |probability difference| against the Keras
    float32 model) of the registered export formats, flat as ``TOLERANCES`` always was: a
    format with one quantization under its name (``savedmodel``), a format with several
    under each quantization (``none``, ``float16``... of ``tflite``). Each format holds its
    own (:attr:`usmtl.formats.Format.tolerances`, with how they were measured)."""
    from usmtl.formats import export_formats

    flat = {}
    for fmt in export_formats():
        if len(fmt.tolerances) == 1:
            flat[fmt.name] = next(iter(fmt.tolerances.values()))
        else:
            flat.update(fmt.tolerances)
    return flat


def __getattr__(name):
    if name == "TOLERANCES":  # read from the registry each time: formats may be added
        return tolerances()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def keras_probabilities(model, images: np.ndarray, tasks: list[str], batch_size: int = 32) -> dict:
    """``{task: (n,)}`` from a Keras model on uint8 crops (cast to the model's input dtype)."""
    from usmtl.export.graph import input_dtype

    dtype = input_dtype(model)
    parts = {name: [] for name in tasks}
    for start in range(0, len(images), batch_size):
        out = model.predict_on_batch(images[start:start + batch_size].astype(dtype))
        for name in tasks:
            parts[name].append(np.ravel(np.asarray(out[name], np.float64)))
    return {name: np.concatenate(v) for name, v in parts.items()}


def _auc(labels, scores) -> float:
    from usmtl.evaluation.metrics import roc_auc

    labels = np.asarray(labels, float)
    known = ~np.isnan(labels)
    return roc_auc(labels[known], np.asarray(scores, float)[known])


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def compare_outputs(reference: dict, exported: dict, tolerance: float,
                    labels: dict | None = None) -> dict:
    """Per task: max/mean |diff|, pass, and (with labels) AUC of both and the change."""
    rows = {}
    for name, ref in reference.items():
        ref = np.asarray(ref, float)
        got = np.asarray(exported[name], float)
        if ref.shape != got.shape:
            raise ValueError(f"{name}: {got.shape} exported vs {ref.shape} reference")
        diff = np.abs(got - ref)
        finite = bool(np.all(np.isfinite(got)))
        row = {"max_abs_diff": float(diff.max()) if finite else math.inf,
               "mean_abs_diff": float(diff.mean()) if finite else math.inf}
        row["passed"] = bool(finite and row["max_abs_diff"] <= tolerance)
        if labels is not None and name in labels:
            y = labels[name]
            auc_ref, auc_exp = _auc(y, ref), _auc(y, got)
            row.update(labelled=int(np.sum(~np.isnan(np.asarray(y, float)))),
                       auc_keras=_clean(auc_ref), auc_export=_clean(auc_exp),
                       auc_change=_clean(auc_exp - auc_ref))
        rows[name] = row
    return rows


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_report(report: dict) -> str:
    """The human table of a parity report."""
    lines = [f"Export: {report['artifact']}",
             f"  format {report['format']}, quantize {report['quantize']}, "
             f"{report['bytes']:,} bytes ({report['bytes'] / 1e6:.2f} MB); "
             f"Keras model {report['reference']['bytes'] / 1e6:.2f} MB"]
    ref = "Keras float32 copy of the mixed-precision model" if report["reference"]["mixed_precision"] \
        else "Keras model"
    lines.append(f"Parity vs the {ref} on {report['images']['count']} images "
                 f"({report['images']['source']}); tolerance max|diff| <= {report['tolerance']:g}")
    has_auc = any("auc_keras" in r for r in report["outputs"].values())
    header = f"  {'output':<14}{'max|diff|':>11}{'mean|diff|':>12}"
    if has_auc:
        header += f"{'n':>6}{'AUC keras':>11}{'AUC export':>12}{'dAUC':>9}"
    lines.append(header + "  result")
    for name, row in report["outputs"].items():
        line = f"  {name:<14}{row['max_abs_diff']:>11.2e}{row['mean_abs_diff']:>12.2e}"
        if has_auc:
            line += (f"{row.get('labelled', 0):>6}{_fmt(row.get('auc_keras'), '.4f'):>11}"
                     f"{_fmt(row.get('auc_export'), '.4f'):>12}{_fmt(row.get('auc_change'), '+.4f'):>9}")
        lines.append(line + ("  ok" if row["passed"] else "  FAIL"))
    source = report["reference"].get("source_max_abs_diff")
    if source is not None:
        lines.append(f"  (export vs the mixed-precision model itself: max|diff| {source:.2e}, "
                     f"float16 rounding, not checked)")
    lat = report["latency"]
    lines.append(f"Latency, one image, median of {lat['runs']} on this CPU: {lat['export_ms']:.3g} ms "
                 f"({lat['runtime']}); Keras predict_on_batch {lat['keras_ms']:.3g} ms")
    lines.append("PARITY PASSED" if report["passed"] else
                 "PARITY FAILED: the export's outputs differ from the Keras model's beyond the tolerance")
    return "\n".join(lines)
