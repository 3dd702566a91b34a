"""The ``savedmodel`` format: a TF Serving SavedModel.

Layout (TF Serving's model base path)::

    OUT/<name>/<version>/saved_model.pb, variables/, fingerprint.pb
    OUT/<name>/<version>/assets.extra/usmtl_export.json, config.yaml, parity.json

One ``serving_default`` signature takes a batch of uint8 RoI crops ``image: (batch, h, w, 3)``
of any size (resized in the graph as training resized them) and returns one float32
probability ``(batch,)`` per task, named after it. Without ``version=``, an export takes the
next free integer version; one that fails parity is moved to ``<version>-parity-failed``
(TF Serving only loads integer folders).

Opened: a version folder, or a model base path (its highest version, as TF Serving does). The
loader also runs a SavedModel without usmtl's side files (``require_side_files=False``): it
takes the signature's one input, whatever its name and dtype.

Parity tolerance (max |probability difference| vs the Keras float32 model): 1e-5. It is the
same TensorFlow graph; 0.0 on every model tried (usmtl 0.1.0, TF 2.21).
"""

from __future__ import annotations

import os

from usmtl.errors import UsmtlError
from usmtl.export import artifacts
from usmtl.export.runtime import ExportedModel
from usmtl.formats import Format, Found, register


class SavedModelExport(ExportedModel):
    kind = "savedmodel"
    runtime_label = "SavedModel serving_default signature"

    def __init__(self, artifact: str, sidecar: str | None = None):
        super().__init__(artifact, sidecar)
        import tensorflow as tf

        self._tf = tf
        self._loaded = tf.saved_model.load(artifact)
        signatures = getattr(self._loaded, "signatures", {})
        if "serving_default" not in signatures:
            raise UsmtlError(f"{artifact}: no serving_default signature. "
                             f"Received: {list(signatures)}")
        self._signature = signatures["serving_default"]
        spec = self._signature.structured_input_signature[1]
        if len(spec) != 1:
            raise UsmtlError(f"{artifact}: expected one image input. Received: {list(spec)}")
        (self._input, self._spec), = spec.items()
        if not self.tasks:  # no side files: the signature's outputs, whatever they are
            self.tasks = sorted(self._signature.structured_outputs)
            shape = self._spec.shape
            if shape.rank == 4 and shape[1] and shape[1] == shape[2]:
                self.image_size = int(shape[1])

    def _run(self, images):
        out = self._signature(**{self._input: self._tf.constant(images, self._spec.dtype)})
        return {name: out[name].numpy() for name in self.tasks}


class SavedModelFormat(Format):
    name = "savedmodel"
    accepts = ("a SavedModel export: a version folder (saved_model.pb) or its model base path "
               "(the highest version)")
    quantizations = ("none",)
    quantize_note = "a SavedModel is float32"
    tolerances = {"none": 1e-5}
    bench_label = "savedmodel (serving_default)"

    def recognise(self, path: str) -> Found | None:
        if not os.path.isdir(path):
            return None
        if os.path.isfile(os.path.join(path, artifacts.SAVED_MODEL_FILE)):
            return Found(self, path, path, os.path.join(path, artifacts.SIDECAR_DIR))
        versions = [v for v in artifacts.numeric_versions(path)
                    if os.path.isfile(os.path.join(path, str(v), artifacts.SAVED_MODEL_FILE))]
        if not versions:
            return None
        version_dir = os.path.join(path, str(versions[-1]))
        return Found(self, path, version_dir, os.path.join(version_dir, artifacts.SIDECAR_DIR))

    def vet(self, found: Found, trust: bool = False) -> None:
        from usmtl.formats.opcheck import require_safe_savedmodel

        require_safe_savedmodel(found.artifact, trust)  # its graph's ops, before it runs

    def load(self, found: Found, threads: int | None = None, batch: int | None = None):
        return SavedModelExport(found.artifact, found.sidecar)

    def target(self, out: str, name: str, version: int | None):
        return artifacts.savedmodel_target(out, name, version)

    def input_description(self, size: int):
        from usmtl.export.graph import MAX_SIDE

        return [None, None, None, 3], (
            f"in the graph: crops of any size (1..{MAX_SIDE} px a side; one size per request) "
            f"are resized to {size}x{size} like usmtl.data.roi.crop_roi (area when shrinking, "
            f"bilinear when enlarging, rounded to whole grey levels); send {size}x{size} crops "
            f"for exact parity with usmtl")

    def write(self, job, folder: str):
        from usmtl.export.graph import write_savedmodel

        job.log(f"Writing the SavedModel "
                f"({'float32 copy of a mixed-precision model' if job.mixed else 'float32'})")
        write_savedmodel(job.infer, job.tasks, job.size, folder)
        return folder, os.path.join(folder, artifacts.SIDECAR_DIR)

    def published(self, target: str, passed: bool) -> str:
        return target if passed else f"{target}-parity-failed"


FORMAT = register(SavedModelFormat())
