"""Model formats: one registry, and one door to open any model usmtl reads.

Every kind of model is a :class:`Format` object that its own module registers with
:func:`register`. The built-in ones are the modules of this package, imported on first use:

- ``keras`` (:mod:`usmtl.formats.keras_run`): a run directory or a ``.keras`` file; loader only;
- ``savedmodel`` (:mod:`usmtl.formats.savedmodel`): a TF Serving SavedModel export;
- ``tflite`` (:mod:`usmtl.formats.tflite`): a LiteRT ``.tflite`` export.

A format says how to recognise a path of its kind, how to load it (a runtime with
``predict(images)``, see :class:`usmtl.export.runtime.Runtime`) and how ``usmtl bench predict``
times it; an export format also says how it is written, its parity tolerance per quantization
and where it is published. :func:`usmtl.export.export` drives any export format; the CLI's
``--format`` choices are the registered export formats.

:func:`open_model` is the one door: predict (and evaluate through it), explain, export and
bench open every model through it. An unknown path is an error listing what is accepted.

Adding a format is adding one module to this package (or anywhere, for a plugin or a test)
that calls :func:`register`; nothing else changes. Importing this package does not import
TensorFlow.

Example:
    >>> from usmtl.formats import open_model
    >>> opened = open_model("exports/quickstart/1")  # doctest: +SKIP
    >>> opened.format.name, opened.cfg.data.image_size, opened.run_dir  # doctest: +SKIP
    ('savedmodel', 224, '/home/me/runs/quickstart')
    >>> opened.model.predict(crops)["malignancy"].shape  # doctest: +SKIP
    (10,)
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import pkgutil

from usmtl.errors import UsmtlError

__all__ = ["Format", "Found", "OpenedModel", "WriteJob", "BenchPlan", "register", "unregister",
           "get", "registered", "export_formats", "export_format", "quantizations", "recognise",
           "open_model", "accepted", "unknown_export_format"]

_REGISTRY: dict[str, "Format"] = {}
_DISCOVERED = False


@dataclasses.dataclass(frozen=True)
class Found:
    """A path that a format recognised."""

    format: "Format"
    path: str               # as given
    artifact: str           # what the loader reads: a .keras file, a SavedModel version folder...
    sidecar: str | None     # the folder of usmtl's side files (usmtl_export.json, config.yaml)

    @property
    def has_side_files(self) -> bool:
        from usmtl.export.artifacts import EXPORT_FILE

        return self.sidecar is not None and os.path.isfile(os.path.join(self.sidecar, EXPORT_FILE))


@dataclasses.dataclass
class WriteJob:
    """What a format's writer gets: the float32 heads model and what to do with it."""

    infer: object            # keras.Model: uint8 crops -> {task: (batch, 1)} probabilities
    tasks: list              # head names, in order
    size: int                # the model's crop size
    quantize: str
    calibration: object      # uint8 crops (n, size, size, 3) from the training rows, or None
    mixed: bool              # the run was mixed precision (``infer`` is its float32 copy)
    meta: dict               # usmtl_export.json; a writer may add keys
    log: object = print


@dataclasses.dataclass
class BenchPlan:
    """How ``usmtl bench predict`` times one model: batches through ``batched`` (``batch``
    images each), single images through ``single`` (None: not timed)."""

    label: str
    batched: object
    single: object
    batch: int


class Format:
    """A kind of model file or folder. Subclass, set the attributes, implement
    :meth:`recognise` and :meth:`load` (and, for an export format, :meth:`target`,
    :meth:`input_description` and :meth:`write`), then :func:`register` an instance."""

    name = ""                   # the registry key and the CLI's --format value
    accepts = ""                # what a path of this format is, for the "Accepted:" listing
    keras = False               # loads as a Keras model (Grad-CAM; exports are made from it)
    run_calibration = True      # a Keras model's recalibration is its run's calibration.json
    quantizations: tuple = ()   # --quantize values the writer takes; () = loader only
    quantize_note = ""          # why the others are refused, e.g. "a SavedModel is float32"
    tolerances: dict = {}       # quantization -> default parity tolerance, max |probability diff|
    bench_label = ""            # the row's name in usmtl bench predict

    @property
    def exportable(self) -> bool:
        return bool(self.quantizations)

    def __repr__(self) -> str:
        return f"<usmtl format {self.name!r}>"

    # -- recognising and loading --------------------------------------------------------

    def recognise(self, path: str) -> Found | None:
        """The :class:`Found` for ``path`` when it is of this format, else None. Cheap: no
        model is loaded and nothing is validated."""
        raise NotImplementedError

    def vet(self, found: Found, trust: bool = False) -> None:
        """Refuse to load ``found`` when it would do more than a model needs (raise a
        :class:`UsmtlError`), unless ``trust``; run before :meth:`load`. The default
        checks nothing."""

    def describe(self, found: Found, require_side_files: bool = True) -> tuple:
        """``(config or None, source run directory or None)``, without loading the model.
        The default reads an export's side files (``usmtl_export.json``, ``config.yaml``)."""
        from usmtl.config import load_config
        from usmtl.export.artifacts import CONFIG_FILE, EXPORT_FILE, read_metadata

        if not found.has_side_files:
            if require_side_files:
                raise UsmtlError(
                    f"{found.artifact} is a {self.name} model but not a usmtl export: "
                    f"{os.path.join(found.sidecar or '', EXPORT_FILE)} is missing (it names the "
                    f"tasks and the RoI settings). Export it with 'usmtl export'. "
                    f"Received: {found.path}")
            return None, None
        meta = read_metadata(found.sidecar)
        config = os.path.join(found.sidecar, CONFIG_FILE)
        cfg = load_config(config) if os.path.isfile(config) else None
        return cfg, meta.get("source", {}).get("run_dir")

    def load(self, found: Found, threads: int | None = None, batch: int | None = None):
        """The runtime (:class:`usmtl.export.runtime.Runtime`) of ``found``. ``threads``: CPU
        threads where the runtime has the choice; ``batch``: the batch to prepare for where
        the model has a fixed one (kept when it cannot be changed)."""
        raise NotImplementedError

    def bench_plan(self, found: Found, batch_size: int) -> BenchPlan:
        """Batches of ``batch_size`` (or the model's fixed batch); single images through a
        batch-1 runtime, None when the model's batch is fixed at more than 1."""
        batched = self.load(found, batch=batch_size)
        limit = batched.batch_limit()
        single = batched
        if limit not in (None, 1):
            single = self.load(found, batch=1)
            if single.batch_limit() != 1:
                single = None
        return BenchPlan(self.bench_label or self.name, batched, single, limit or batch_size)

    # -- exporting ----------------------------------------------------------------------

    def check(self, quantize: str, manifest: str | None) -> None:
        """Argument errors of this format, before anything is loaded or written."""

    def target(self, out: str, name: str, version: int | None) -> tuple[str, int | None]:
        """``(folder the export will be published as, version or None)``; refuses to
        replace anything."""
        raise NotImplementedError

    def input_description(self, size: int) -> tuple[list, str]:
        """``(input shape, resize rule)`` for ``usmtl_export.json``."""
        raise NotImplementedError

    def write(self, job: WriteJob, folder: str) -> tuple[str, str]:
        """Write the model into the new folder ``folder``; returns ``(artifact, sidecar)``,
        both inside ``folder`` (the sidecar folder is created by the caller if needed)."""
        raise NotImplementedError

    def published(self, target: str, passed: bool) -> str:
        """Where the export goes once parity is known (default: ``target`` either way)."""
        return target

    def artifact_bytes(self, artifact: str) -> int:
        """Size of what a deployment ships (default: the file, or every file of the folder
        outside the side-file folder)."""
        from usmtl.export.artifacts import SIDECAR_DIR

        if os.path.isfile(artifact):
            return os.path.getsize(artifact)
        total = 0
        for root, _, files in os.walk(artifact):
            if os.path.relpath(root, artifact).split(os.sep)[0] == SIDECAR_DIR:
                continue
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
        return total


# ---------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------


def _discover() -> None:
    """Import the modules of this package once; each registers its format."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def register(fmt: Format, replace: bool = False) -> Format:
    """Add ``fmt`` to the registry (after the built-in formats); returns it."""
    _discover()
    if not isinstance(fmt, Format) or not fmt.name:
        raise UsmtlError(f"A format is a usmtl.formats.Format with a name. Received: {fmt!r}")
    if fmt.exportable and set(fmt.tolerances) != set(fmt.quantizations):
        raise UsmtlError(f"Format {fmt.name!r}: one tolerance per quantization. Received: "
                         f"quantizations {fmt.quantizations}, tolerances {sorted(fmt.tolerances)}")
    if fmt.name in _REGISTRY and _REGISTRY[fmt.name] is not fmt and not replace:
        raise UsmtlError(f"A format named {fmt.name!r} is registered already "
                         f"({_REGISTRY[fmt.name]!r}). Received: {fmt!r}")
    _REGISTRY[fmt.name] = fmt
    return fmt


def unregister(name: str) -> Format | None:
    """Remove a format; returns it (None when there was none)."""
    _discover()
    return _REGISTRY.pop(name, None)


def registered() -> list[Format]:
    """Every format, in registration order (the built-in ones by module name first)."""
    _discover()
    return list(_REGISTRY.values())


def get(name: str) -> Format:
    _discover()
    if name not in _REGISTRY:
        raise UsmtlError(f"Unknown model format; registered: {', '.join(_REGISTRY)}. "
                         f"Received: {name!r}")
    return _REGISTRY[name]


def export_formats() -> list[Format]:
    """The formats ``usmtl export`` can write."""
    return [f for f in registered() if f.exportable]


def unknown_export_format(name) -> str:
    return (f"Unknown export format; valid formats: "
            f"{', '.join(f.name for f in export_formats())}. Received: {name!r}")


def export_format(name: str) -> Format:
    """The export format ``name``, or an error listing the valid ones."""
    for fmt in export_formats():
        if fmt.name == name:
            return fmt
    raise UsmtlError(unknown_export_format(name))


def quantizations() -> tuple[str, ...]:
    """Every --quantize value some export format takes, in registration order."""
    seen = {}
    for fmt in export_formats():
        seen.update(dict.fromkeys(fmt.quantizations))
    return tuple(seen)


# ---------------------------------------------------------------------------------------
# The door
# ---------------------------------------------------------------------------------------


def accepted() -> str:
    """What :func:`open_model` accepts, one clause per registered format."""
    return "; ".join(f"{f.name}: {f.accepts}" for f in registered())


def recognise(path) -> Found | None:
    """The first registered format's :class:`Found` for ``path``, or None."""
    path = os.fspath(path)
    for fmt in registered():
        found = fmt.recognise(path)
        if found is not None:
            return found
    return None


@dataclasses.dataclass
class OpenedModel:
    """A model opened by :func:`open_model`. ``cfg``: the run's config (RoI settings, tasks);
    ``run_dir``: the run it comes from when known (its ``split.csv``); ``model``: the
    runtime, loaded on first use."""

    path: str
    format: Format
    found: Found
    cfg: object
    run_dir: str | None
    options: dict = dataclasses.field(default_factory=dict)
    trust: bool = False  # --trust-model: load it even if Format.vet finds what a model needs not

    @functools.cached_property
    def model(self):
        self.format.vet(self.found, self.trust)
        return self.format.load(self.found, **self.options)

    @functools.cached_property
    def calibration(self) -> dict | None:
        """The recalibration applied to this model's scores (``usmtl calibrate``): the run's
        ``calibration.json`` for a run or a ``.keras`` file in one, the copy in an export's
        ``usmtl_export.json``; None when there is none."""
        if self.format.keras and self.format.run_calibration:
            from usmtl.run import Run

            return Run(self.run_dir).calibration() if self.run_dir else None
        if self.found.has_side_files:
            from usmtl.export.artifacts import read_metadata

            return read_metadata(self.found.sidecar).get("calibration")
        return None

    def require_keras(self, why: str = "this needs a Keras model") -> "OpenedModel":
        """``self`` when it is a Keras model; else an error naming the path and ``why``
        (nothing is loaded either way)."""
        if not self.format.keras:
            source = f" (it was exported from {self.run_dir})" if self.run_dir else ""
            raise UsmtlError(f"{self.path} is a {self.format.name} export; {why}: a run directory "
                             f"or a .keras file{source}. Received: {self.path}")
        return self

    def keras_model(self, why: str = "this needs a Keras model"):
        """The Keras model itself (see :meth:`require_keras`)."""
        return self.require_keras(why).model.keras


def open_model(path, require_side_files: bool = True, threads: int | None = None,
               batch: int | None = None, trust: bool = False) -> OpenedModel:
    """Open any model usmtl reads: a run directory, a ``.keras`` file, an export, or a path of
    any other registered format.

    ``require_side_files``: an export must carry usmtl's side files (task names, RoI
    settings); False opens a foreign SavedModel or ``.tflite`` too (``cfg`` None), as
    ``usmtl bench predict`` does. ``threads`` and ``batch`` go to the format's loader.
    ``trust``: load the model even where its format's check before loading
    (:meth:`Format.vet`, e.g. a SavedModel's file ops) refuses it.
    """
    path = os.fspath(path)
    found = recognise(path)
    if found is None:
        what = "is not a model usmtl can open" if os.path.exists(path) else "does not exist"
        raise UsmtlError(f"{path} {what}. Accepted: {accepted()}. Received: {path}")
    cfg, run_dir = found.format.describe(found, require_side_files)
    options = {k: v for k, v in (("threads", threads), ("batch", batch)) if v is not None}
    return OpenedModel(path, found.format, found, cfg, run_dir, options, trust)
