"""Where exports live and what they carry beside the model (no TensorFlow needed here).

Layouts::

    SavedModel (TF Serving's model base path):
        OUT/<name>/<version>/saved_model.pb, variables/, fingerprint.pb
        OUT/<name>/<version>/assets.extra/usmtl_export.json, config.yaml, parity.json
    TFLite (one export per folder):
        OUT/model.tflite, usmtl_export.json, config.yaml, parity.json

TF Serving ignores ``assets.extra/``. ``usmtl_export.json`` holds what a client (and
``usmtl predict``) needs: task names in head order, the hierarchy's edges, the input's size,
dtype and resizing rule, the RoI settings, and where the model came from. ``config.yaml`` is
the run's resolved config (RoI margin, squaring).

Versions: without ``version=``, a SavedModel export takes the next free integer version under
``OUT/<name>/`` (1 when there is none), so an export never replaces a version that TF Serving
may be serving. An explicit version that already exists and is not empty is an error; so is a
TFLite ``OUT`` folder that is not empty.

The formats (:mod:`usmtl.formats`) read these names; this module imports none of them (the
size of what a deployment ships is :meth:`usmtl.formats.Format.artifact_bytes`).
"""

from __future__ import annotations

import json
import os
import re

from usmtl.errors import UsmtlError

EXPORT_FILE = "usmtl_export.json"
PARITY_FILE = "parity.json"
CONFIG_FILE = "config.yaml"
SIDECAR_DIR = "assets.extra"
TFLITE_FILE = "model.tflite"
SAVED_MODEL_FILE = "saved_model.pb"
SCHEMA_VERSION = 1


def export_name(cfg_name: str, name: str | None = None) -> str:
    """The model name of the serving path: ``name``, or the config's name made URL-safe."""
    if name is not None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise UsmtlError(f"--name must be letters, digits, '_', '.' or '-' (it becomes a "
                             f"URL path part in TF Serving). Received: {name!r}")
        return name
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", cfg_name).strip("_.-")
    return cleaned or "usmtl"


def numeric_versions(base: str) -> list[int]:
    """Integer version folders under a model base path, as TF Serving sees them."""
    if not os.path.isdir(base):
        return []
    return sorted(int(d) for d in os.listdir(base)
                  if d.isdigit() and os.path.isdir(os.path.join(base, d)))


def savedmodel_target(out: str, name: str, version: int | None) -> tuple[str, int]:
    """``(OUT/<name>/<version>, version)``; refuses a non-empty explicit version."""
    base = os.path.join(out, name)
    if version is None:
        existing = numeric_versions(base)
        version = existing[-1] + 1 if existing else 1
    elif not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UsmtlError(f"--version must be an integer >= 1 (TF Serving's version folders). "
                         f"Received: {version!r}")
    target = os.path.join(base, str(version))
    if os.path.exists(target) and (not os.path.isdir(target) or os.listdir(target)):
        raise UsmtlError(f"{target} already exists and is not empty; an export never replaces a "
                         f"version (TF Serving may be serving it). Leave out --version to take the "
                         f"next one ({numeric_versions(base)[-1] + 1 if numeric_versions(base) else 1}). "
                         f"Received: --version {version}")
    return target, version


def tflite_target(out: str) -> str:
    """The TFLite export folder; refuses a file name or a non-empty folder."""
    if out.lower().endswith(".tflite"):
        raise UsmtlError(f"--out is a folder for a TFLite export (it holds {TFLITE_FILE}, "
                         f"{EXPORT_FILE}, {CONFIG_FILE} and {PARITY_FILE}). Received: {out}")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise UsmtlError(f"{out} already exists and is not empty; choose a new --out folder "
                         f"(an export never overwrites another). Received: {out}")
    return out


def read_metadata(sidecar: str) -> dict:
    path = os.path.join(sidecar, EXPORT_FILE)
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as exc:
        raise UsmtlError(f"{path}: cannot read the export description ({exc})") from None
    missing = [k for k in ("format", "tasks", "edges", "input") if k not in meta]
    if missing:
        raise UsmtlError(f"{path}: missing key(s) {missing}. Received keys: {sorted(meta)}")
    return meta


def write_json(path: str, data) -> None:
    """Atomically, as every JSON file of usmtl (:func:`usmtl.run.write_json_atomic`)."""
    from usmtl.run import write_json_atomic

    write_json_atomic(path, data)
