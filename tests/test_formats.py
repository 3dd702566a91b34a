"""usmtl.formats: the format registry and the one door (open_model).

- every registered format's paths are recognised and opened by the door, with the config and
  the source run;
- a format defined here (``dummy``: a folder holding the float32 heads as a .keras file),
  registered and removed by a fixture, is a --format choice, is exported, checked, opened,
  predicted with and benchmarked without any other module changing;
- an unknown path is an error listing what is accepted; an export given to Grad-CAM is an
  error naming it; argument errors come from the registry;
- no format branch (``fmt == ...``) is left outside the format modules.
"""

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO, invoke

BUILTIN = ["ensemble", "keras", "savedmodel", "tflite"]


# ---------------------------------------------------------------------------------------
# Fixtures: an untrained tiny run and its exports
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run directory holding an untrained tiny model (no training: only its files matter)."""
    import keras

    from usmtl.config import config_from_dict, save_config
    from usmtl.model.multitask import build_model
    from tests.conftest import tiny_config_dict

    cfg = config_from_dict(tiny_config_dict())
    run = tmp_path_factory.mktemp("formats") / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_config(cfg, str(run / "config.yaml"))
    keras.utils.set_random_seed(0)
    build_model(cfg).save(str(run / "checkpoints" / "best.keras"))
    return run


@pytest.fixture(scope="module")
def exports(tiny_run, tmp_path_factory):
    """``{format: ExportResult}`` of every built-in export format."""
    from usmtl.export import export

    out = tmp_path_factory.mktemp("exports")
    return {fmt: export(str(tiny_run), fmt, str(out / fmt), images=4, latency_runs=1,
                        log=lambda *_: None)
            for fmt in ("savedmodel", "tflite")}


@pytest.fixture(scope="module")
def crops_and_reference(tiny_run):
    from usmtl.predict import load_run

    model, _ = load_run(str(tiny_run))
    crops = np.random.default_rng(3).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    reference = model.predict(crops.astype(np.float32), verbose=0)
    return crops, {name: np.ravel(v) for name, v in reference.items()}


def _paths(fmt, tiny_run, exports):
    """Every kind of path of ``fmt`` the door accepts."""
    if fmt == "keras":
        return [tiny_run, tiny_run / "checkpoints" / "best.keras"]
    if fmt == "ensemble":  # the run as a one-member ensemble
        from usmtl.formats.ensemble import ENSEMBLE_FILE, write_ensemble

        folder = tiny_run.parent / "ensemble"
        if not (folder / ENSEMBLE_FILE).is_file():
            write_ensemble(str(folder), [str(tiny_run)])
        return [folder]
    path = Path(exports[fmt].path)
    if fmt == "savedmodel":
        return [path, path.parent]  # the version folder, the model base path
    return [path, path.parent]  # the .tflite file, the export folder


# ---------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------


def test_builtin_formats_are_the_modules_of_the_package():
    from usmtl import formats

    names = [f.name for f in formats.registered()]
    assert names[:len(BUILTIN)] == BUILTIN
    for fmt in formats.registered()[:len(BUILTIN)]:
        assert type(fmt).__module__.startswith("usmtl.formats."), fmt
    assert [f.name for f in formats.export_formats()] == ["savedmodel", "tflite"]


@pytest.mark.parametrize("key, value", [("savedmodel", 1e-5), ("none", 1e-4),
                                        ("float16", 5e-3), ("dynamic", 5e-2), ("int8", 1e-1)])
def test_tolerances_come_from_the_formats(key, value):
    from usmtl.export import TOLERANCES

    assert TOLERANCES[key] == value


@pytest.mark.parametrize("fmt, quantize, manifest, message", [
    ("onnx", "none", None, "valid formats: savedmodel, tflite. Received: 'onnx'"),
    ("tflite", "int4", None, "valid: none, float16, dynamic, int8. Received: 'int4'"),
    ("savedmodel", "int8", None, "--quantize int8 applies to --format tflite only; a SavedModel"),
    ("tflite", "int8", None, "--quantize int8 needs --manifest"),
])
def test_argument_errors_come_from_the_registry(fmt, quantize, manifest, message):
    from usmtl.errors import UsmtlError
    from usmtl.export.core import check_arguments

    with pytest.raises(UsmtlError) as info:
        check_arguments(fmt, quantize, manifest, 4, 4, None)
    assert message in str(info.value)


# ---------------------------------------------------------------------------------------
# The door
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fmt", BUILTIN)
def test_every_format_is_recognised_and_opened_by_the_door(fmt, tiny_run, exports,
                                                           crops_and_reference):
    from usmtl import formats

    assert formats.get(fmt).name == fmt  # the parameter list is the registry's
    crops, reference = crops_and_reference
    tolerance = formats.get(fmt).tolerances.get("none", 1e-6)
    for path in _paths(fmt, tiny_run, exports):
        assert formats.recognise(path).format.name == fmt, path
        opened = formats.open_model(path)
        assert opened.format.name == fmt and opened.cfg.name == "tiny", path
        assert os.path.samefile(opened.run_dir, tiny_run), (path, opened.run_dir)
        got = opened.model.predict(crops)
        assert opened.model.kind == fmt
        for name, expected in reference.items():
            assert got[name].shape == (len(crops),)
            assert np.abs(got[name] - expected).max() <= tolerance, (path, name)


@pytest.mark.slow
def test_predict_module_reexports_the_door(tiny_run):
    import usmtl.formats
    import usmtl.predict

    assert usmtl.predict.open_model is usmtl.formats.open_model
    model, cfg = usmtl.predict.load_run(str(tiny_run))
    assert cfg.name == "tiny" and model.get_layer("malignancy") is not None  # a keras.Model


def _not_a_model(tmp_path, kind):
    if kind == "missing":
        return tmp_path / "nothing-here"
    if kind == "empty folder":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty"
    if kind == "text file":
        (tmp_path / "model.txt").write_text("x")
        return tmp_path / "model.txt"
    (tmp_path / "onnx").mkdir()  # a folder with a model of no registered format
    (tmp_path / "onnx" / "model.onnx").write_bytes(b"")
    return tmp_path / "onnx"


@pytest.mark.parametrize("kind", ["missing", "empty folder", "text file", "foreign folder"])
def test_unknown_paths_list_what_is_accepted(tmp_path, kind):
    from usmtl import formats
    from usmtl.errors import UsmtlError

    path = _not_a_model(tmp_path, kind)
    with pytest.raises(UsmtlError) as info:
        formats.open_model(path)
    message = str(info.value)
    assert message.endswith(f"Received: {path}"), message
    assert "Accepted:" in message and "best.keras" in message
    for fmt in formats.registered():
        assert f"{fmt.name}: {fmt.accepts}" in message, fmt


def _fake_export(tmp_path, fmt, tiny_config):
    """An export's files without a real model: the door describes it without loading."""
    from usmtl.config import save_config

    meta = {"format": fmt, "tasks": ["malignancy"], "edges": [], "input": {"image_size": 32},
            "source": {"run_dir": "/runs/tiny"}}
    if fmt == "savedmodel":
        path = tmp_path / "serving" / "tiny" / "1"
        sidecar = path / "assets.extra"
        sidecar.mkdir(parents=True)
        (path / "saved_model.pb").write_bytes(b"")
    else:
        path = sidecar = tmp_path / "lite"
        path.mkdir()
        (path / "model.tflite").write_bytes(b"")
    (sidecar / "usmtl_export.json").write_text(json.dumps(meta))
    save_config(tiny_config, str(sidecar / "config.yaml"))
    return path


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite"])
def test_gradcam_on_an_export_is_a_clear_error(tmp_path, fmt, tiny_config):
    from usmtl.errors import UsmtlError
    from usmtl.explain import explain

    path = _fake_export(tmp_path, fmt, tiny_config)
    with pytest.raises(UsmtlError) as info:
        explain(str(path), str(tmp_path / "image.png"), ["malignancy"], out=str(tmp_path / "x"))
    message = str(info.value)
    assert "Grad-CAM needs a Keras model" in message and str(path) in message
    assert f"is a {fmt} export" in message and "/runs/tiny" in message
    image = tmp_path / "image.png"
    image.write_bytes(b"")
    result = invoke("explain", path, image, "--task", "malignancy", "--out", tmp_path / "y")
    assert result.exit_code == 2 and "Grad-CAM needs a Keras model" in result.output, result.output


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite"])
def test_exports_without_side_files_need_require_side_files_false(tmp_path, fmt, tiny_config):
    from usmtl import formats
    from usmtl.errors import UsmtlError

    path = _fake_export(tmp_path, fmt, tiny_config)
    found = formats.recognise(path)
    os.remove(os.path.join(found.sidecar, "usmtl_export.json"))
    with pytest.raises(UsmtlError, match="not a usmtl export"):
        formats.open_model(path)
    opened = formats.open_model(path, require_side_files=False)
    assert opened.format.name == fmt and opened.cfg is None and opened.run_dir is None


# ---------------------------------------------------------------------------------------
# A format added from outside: one definition, registered and removed by a fixture
# ---------------------------------------------------------------------------------------


def _dummy_classes():
    """The dummy format: a folder with ``model.dummy`` and the heads as ``heads.keras``."""
    from usmtl.export.runtime import ExportedModel
    from usmtl.formats import Format, Found

    class DummyRuntime(ExportedModel):
        kind = "dummy"
        runtime_label = "Keras, the heads saved by the dummy format"

        def __init__(self, artifact, sidecar):
            from usmtl.run import load_keras_model

            super().__init__(artifact, sidecar)
            self._model = load_keras_model(artifact)

        def _run(self, images):
            out = self._model.predict_on_batch(images.astype(np.float32))
            return {name: np.ravel(out[name]) for name in self.tasks}

    class DummyFormat(Format):
        name = "dummy"
        accepts = "a dummy export folder (model.dummy)"
        quantizations = ("none",)
        tolerances = {"none": 1e-6}
        bench_label = "dummy (Keras heads)"

        def recognise(self, path):
            if os.path.isfile(os.path.join(path, "model.dummy")):
                return Found(self, path, os.path.join(path, "heads.keras"), path)
            return None

        def load(self, found, threads=None, batch=None):
            return DummyRuntime(found.artifact, found.sidecar)

        def target(self, out, name, version):
            if os.path.exists(out):
                raise ValueError(out)
            return out, None

        def input_description(self, size):
            return [None, size, size, 3], "none"

        def write(self, job, folder):
            os.makedirs(folder)
            job.infer.save(os.path.join(folder, "heads.keras"))
            Path(folder, "model.dummy").write_text("dummy")
            return os.path.join(folder, "heads.keras"), folder

    return DummyFormat


@pytest.fixture
def dummy_format():
    from usmtl import formats

    fmt = formats.register(_dummy_classes()())
    yield fmt
    assert formats.unregister("dummy") is fmt


@pytest.mark.parametrize("registered", [False, True])
def test_cli_format_choices_are_the_registered_export_formats(registered, request):
    if registered:
        request.getfixturevalue("dummy_format")
    result = invoke("export", "--help")
    assert result.exit_code == 0, result.output
    choices = re.search(r"--format \[([a-z|]+)\]", result.output).group(1).split("|")
    assert choices == ["savedmodel", "tflite"] + (["dummy"] if registered else [])
    rejected = invoke("export", ".", "--format", "onnx", "--out", "x")
    assert rejected.exit_code == 2
    assert (f"valid formats: savedmodel, tflite{', dummy' if registered else ''}. "
            f"Received: 'onnx'") in rejected.output, rejected.output


@pytest.mark.slow
def test_a_registered_format_is_exported_opened_predicted_and_benchmarked(
        dummy_format, tiny_run, tmp_path, phantoms, crops_and_reference):
    from usmtl.bench import bench_predict
    from usmtl.formats import open_model

    out = tmp_path / "dummy-export"
    result = invoke("export", tiny_run, "--format", "dummy", "--out", out, "--images", 4,
                    "--latency-runs", 1)
    assert result.exit_code == 0 and "PARITY PASSED" in result.output, result.output
    assert sorted(os.listdir(out)) == ["config.yaml", "heads.keras", "model.dummy",
                                       "parity.json", "usmtl_export.json"]
    report = json.loads((out / "parity.json").read_text())
    assert report["format"] == "dummy" and report["tolerance"] == 1e-6 and report["passed"]
    assert report["artifact"] == str(out / "heads.keras")
    assert report["latency"]["runtime"] == "Keras, the heads saved by the dummy format"
    assert json.loads((out / "usmtl_export.json").read_text())["input"]["resize"] == "none"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".usmtl-export-")]

    opened = open_model(out)
    assert opened.format is dummy_format and os.path.samefile(opened.run_dir, tiny_run)
    crops, reference = crops_and_reference
    got = opened.model.predict(crops)
    for name, expected in reference.items():
        np.testing.assert_allclose(got[name], expected, atol=1e-6, rtol=0)

    frames = {}
    for label, model in (("run", tiny_run), ("dummy", out)):
        result = invoke("predict", model, phantoms, "--out", tmp_path / f"{label}.csv")
        assert result.exit_code == 0, result.output
        frames[label] = pd.read_csv(tmp_path / f"{label}.csv")
    for column in [c for c in frames["run"].columns if c.startswith("p_")]:
        assert np.abs(frames["dummy"][column] - frames["run"][column]).max() <= 1e-5, column

    bench = bench_predict(str(tiny_run), models=[str(out)], batch_size=4, batches=1, runs=3)
    assert [row["model"] for row in bench["rows"]] == ["keras (predict_on_batch)",
                                                      "dummy (Keras heads)"]
    assert bench["formats"] == ["keras", "dummy"]
    assert all(row["images_per_s"] > 0 and row["single_image_ms"] > 0 for row in bench["rows"])


# ---------------------------------------------------------------------------------------
# The loaders' options (what bench predict needs)
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("batch", [None, 1, 4])
def test_tflite_loader_prepares_the_batch_asked_for(batch, exports, crops_and_reference):
    from usmtl.formats import open_model

    crops, reference = crops_and_reference
    runtime = open_model(exports["tflite"].path, batch=batch).model
    assert runtime.batch_limit() in ({1, batch} if batch else {1})
    got = runtime.run(crops[:4])
    for name, expected in reference.items():
        assert np.abs(np.ravel(got[name]) - expected[:4]).max() <= 1e-4, name


# ---------------------------------------------------------------------------------------
# No format branches outside the format modules
# ---------------------------------------------------------------------------------------

BRANCHES = {
    "fmt ==": r"\bfmt\s*[!=]=",
    "== '<format>'": r"[!=]=\s*[\"'](keras|savedmodel|tflite)[\"']",
    "'<format>' ==": r"[\"'](keras|savedmodel|tflite)[\"']\s*[!=]=",
    "in ('<format>', ...)": r"\bin\s*[(\[{]\s*[\"'](savedmodel|tflite)[\"']",
}


@pytest.mark.parametrize("name", sorted(BRANCHES))
def test_no_format_branch_outside_the_format_modules(name):
    pattern = re.compile(BRANCHES[name])
    formats_dir = REPO / "usmtl" / "formats"
    hits = []
    for file in sorted((REPO / "usmtl").rglob("*.py")):
        if formats_dir in file.parents:
            continue
        for number, line in enumerate(file.read_text().splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{file.relative_to(REPO)}:{number}: {line.strip()}")
    assert not hits, "\n".join(hits)
