"""The bad-input probe (issue 23): one case per row, each a command a new user could type.

Each case names its inputs, the outcome it must have and the key words of its message:

- ``REFUSED``: a non-zero exit with a message holding every key word, no traceback;
- ``VALID``: exit 0 and, where the case has a ``check``, a right result;
- ``WARNED``: exit 0 with a message holding every key word.

:func:`observed` sorts what happened into the issue's outcome classes (a clear refusal,
accepted and valid, a traceback or a message that blames the wrong thing, exit 0 with a wrong
result); ``USMTL_PROBE_REPORT=FILE`` appends each case's class to FILE as a JSON line, which is
how the before/after counts of the issue are made. Inputs are tiny: a 16-patient demo set, the
session's shared trained run (``trained_run``), and every ``fit`` case fails before training.
The CLI runs in-process (click's CliRunner); no case needs a subprocess.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import zipfile
from typing import Callable

import numpy as np
import pytest

REFUSED, VALID, WARNED = "refused", "valid", "warned"
FIT = ["fit", "--config", "quickstart", "--set", "train.epochs=1", "--set", "data.image_size=32"]


@dataclasses.dataclass
class Case:
    id: str
    make: Callable  # Bench -> argv (list), run in-process
    expect: str
    words: tuple = ()
    check: Callable | None = None  # (Bench, argv, output) -> True when the result is right


# ---------------------------------------------------------------------------------------
# The bench: tiny inputs, built once
# ---------------------------------------------------------------------------------------


class Bench:
    """A 16-patient demo set (absolute paths), the trained run and its predictions, and
    helpers that write a variant of one of them and return its path."""

    def __init__(self, root, run):
        from usmtl.data.phantoms import make_phantoms

        self.root, self.run, self._n = root, str(run), 0
        make_phantoms(str(root / "demo"), n_patients=16, size=64, seed=3, progress=False)
        with open(root / "demo" / "manifest.csv", newline="") as f:
            self.rows = list(csv.DictReader(f))
        for row in self.rows:
            for key in ("image", "annotation"):
                row[key] = str(root / "demo" / row[key])
        self.columns = list(self.rows[0])
        self.manifest_path = self.manifest()
        self.predictions = self.path("pred.csv")
        result = run_cli(["predict", self.run, self.manifest_path, "--out", self.predictions])
        assert result.exit_code == 0, result.output
        with open(self.predictions, newline="") as f:
            self.pred_rows = list(csv.DictReader(f))

    def path(self, name: str) -> str:
        """A new path in a fresh folder of the bench."""
        self._n += 1
        folder = self.root / f"c{self._n:03d}"
        folder.mkdir()
        return str(folder / name)

    def manifest(self, edit=None, columns=None, name="m.csv", rows=None) -> str:
        """A copy of the demo manifest, ``edit(rows)`` applied to its rows (dicts)."""
        rows = [dict(r) for r in (self.rows if rows is None else rows)]
        rows = _edited(rows, edit)
        columns = columns or list(dict.fromkeys(k for r in rows for k in r))
        path = self.path(name)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        return path

    def boxed(self, edit=None) -> str:
        """The manifest with box columns (2,2,20,20) instead of annotations."""
        def boxes(rows):
            for r in rows:
                r.pop("annotation")
                r.update(x_min="2", y_min="2", x_max="20", y_max="20")
            return edit(rows) if edit else rows
        return self.manifest(boxes)

    def xml(self, xmin="3", ymin="3", xmax="20", ymax="20", text=None) -> str:
        """A manifest whose first row's LabelImg file holds these values (or ``text``)."""
        path = self.path("a.xml")
        with open(path, "w") as f:
            f.write(text if text is not None else
                    f"<annotation><object><name>l</name><bndbox><xmin>{xmin}</xmin>"
                    f"<ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>"
                    f"</object></annotation>")
        return self.manifest(cell(0, "annotation", path))

    def image(self, data: bytes, name="x.png", row=0) -> str:
        """A manifest whose row ``row`` names a file holding ``data``."""
        path = self.path(name)
        with open(path, "wb") as f:
            f.write(data)
        return self.manifest(cell(row, "image", path))

    def encoded(self, ext: str, keep: float = 1.0) -> bytes:
        """The first image encoded as ``ext``, cut to ``keep`` of its bytes."""
        import cv2

        data = cv2.imencode(ext, cv2.imread(self.rows[0]["image"]))[1].tobytes()
        return data[:int(len(data) * keep)]

    def preds(self, edit=None) -> str:
        """A copy of the trained run's prediction CSV, ``edit(rows)`` applied."""
        rows = [dict(r) for r in self.pred_rows]
        rows = _edited(rows, edit)
        path = self.path("p.csv")
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return path

    def split_file(self) -> str:
        """A split.csv putting P9999 on the other side from the first row's patient."""
        rows = _with_splits([dict(r) for r in self.rows])
        lines = {r["patient_id"]: r["split"] for r in rows}
        lines["P9999"] = _other(rows[0]["split"])
        return self.text("patient_id,split\n" + "".join(f"{p},{v}\n" for p, v in lines.items()),
                         "split.csv")

    def text(self, text, name="f.txt", binary=False) -> str:
        path = self.path(name)
        with open(path, "wb" if binary else "w") as f:
            f.write(text)
        return path

    def config(self, text: str) -> str:
        return self.text(text, "c.yaml", binary=isinstance(text, bytes))

    def unwritable(self, name: str) -> str:
        """A path in a "folder" that is a file: unwritable for root too (CI may be root,
        for whom a read-only folder is writable)."""
        return os.path.join(self.text("x", "file"), name)

    def pack(self, **meta) -> str:
        """A valid pack of the first 4 rows, then ``meta`` written over its pack.json (a key
        set to ``...`` is removed)."""
        source = getattr(self, "_pack", None)
        if source is None:
            manifest = self.manifest(rows=self.rows[:4])
            source = self._pack = self.path("base.pack")
            result = run_cli(["pack", manifest, "--size", "32", "--out", source])
            assert result.exit_code == 0, result.output
        out = self.path("x.pack")
        with zipfile.ZipFile(source) as zin, zipfile.ZipFile(out, "w") as zout:
            for info in zin.infolist():
                data = zin.read(info)
                if info.filename == "pack.json":
                    values = json.loads(data)
                    values.update(meta)
                    values = {k: v for k, v in values.items() if v is not ...}
                    data = json.dumps(values).encode()
                zout.writestr(info, data)
        return out


def _edited(rows, edit):
    """``edit(rows)``: the rows it returns (a list of dicts), else ``rows`` changed in place."""
    out = None if edit is None else edit(rows)
    return out if isinstance(out, list) and out and isinstance(out[0], dict) else rows


def tiny_yaml(**sections) -> str:
    """The tiny test config as YAML text, ``sections`` merged in (``.inf`` stays YAML's)."""
    import yaml

    from tests.conftest import tiny_config_dict

    return yaml.safe_dump(tiny_config_dict(**sections)).replace("'.inf'", ".inf")


def cell(i, column, value):
    def edit(rows):
        rows[i][column] = value
    return edit


def pcell(column, value, i=0):
    return cell(i, column, value)


def run_cli(argv):
    from click.testing import CliRunner

    from usmtl.cli import main

    return CliRunner().invoke(main, [str(a) for a in argv], catch_exceptions=True)


@pytest.fixture(scope="module")
def bench(tmp_path_factory, trained_run, phantoms):
    root = tmp_path_factory.mktemp("bad_inputs")
    bench = Bench(root, trained_run)
    bench.phantoms = str(phantoms)  # 80 patients: enough for a fit that trains
    return bench


# ---------------------------------------------------------------------------------------
# Checks of a result
# ---------------------------------------------------------------------------------------


def no_file(*names):
    """True when none of the files named by argv options ``names`` exists."""
    def check(b, argv, output):
        return all(not os.path.exists(argv[argv.index(n) + 1]) for n in names)
    return check


def unchanged_input(b, argv, output):
    with open(argv[2], newline="") as f:
        return next(csv.reader(f))[0] == "image" and "p_malignancy" not in f.read(200)


def patient_count(n):
    def check(b, argv, output):
        from usmtl.data.manifest import read_manifest

        return len(set(read_manifest(argv[-1]).patient_ids())) == n
    return check


def fit_manifest(make):
    """``usmtl fit`` on the manifest ``make(bench)`` into a fresh run directory."""
    return lambda b: FIT + ["--manifest", make(b), "--out", b.path("run")]


def check_of(make, *extra):
    return lambda b: ["check", make(b), "--no-duplicates", *extra]


def both(case_id, make, expect, words):
    """The same manifest through ``check`` and through ``fit``: two cases."""
    return [Case(f"check-{case_id}", check_of(make), expect, words),
            Case(f"fit-{case_id}", fit_manifest(make), expect, words)]


def evaluate_csv(make, *extra):
    return lambda b: ["evaluate", make(b), "--bootstrap", "20", "--out", b.path("ev"), *extra]


def evil_savedmodel(b, op="write"):
    """A SavedModel with usmtl's side files whose signature writes (or reads) a file."""
    import tensorflow as tf

    target = os.path.join(b.root, "pwned.txt")

    class Evil(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
        def serve(self, image):
            if op == "write":
                tf.io.write_file(target, "written by a model")
            else:
                tf.io.read_file("/etc/hostname")
            p = tf.reduce_mean(tf.cast(image, tf.float32), axis=[1, 2, 3]) * 0.0 + 0.5
            return {"malignancy": p, "alnm": p, "aln_ge_2": p}

    model = Evil()
    folder = os.path.join(b.path("evil"), "1")
    tf.saved_model.save(model, folder, signatures={"serving_default": model.serve})
    extra = os.path.join(folder, "assets.extra")
    os.makedirs(extra)
    shutil.copy(os.path.join(b.run, "config.yaml"), os.path.join(extra, "config.yaml"))
    with open(os.path.join(extra, "usmtl_export.json"), "w") as f:
        json.dump({"format": "savedmodel", "tasks": ["malignancy", "alnm", "aln_ge_2"],
                   "edges": [["malignancy", "alnm"], ["alnm", "aln_ge_2"]],
                   "input": {"image_size": 32}, "quantize": "none"}, f)
    return folder


def evil_unwritten(b, argv, output):
    return not os.path.exists(os.path.join(b.root, "pwned.txt"))


# ---------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------

NONFINITE = [("inf", "inf"), ("1e400", "1e400"), ("nan", "nan"), ("-inf", "-inf")]

CASES: list[Case] = []

# Manifests: non-finite and odd numbers, by line and column, in check and fit alike.
for label, value in NONFINITE:
    CASES += both(f"box-{label}", lambda b, v=value: b.boxed(cell(0, "x_max", v)), REFUSED,
                  ("line 2", "x_max", "Received"))
    CASES += both(f"xml-{label}", lambda b, v=value: b.xml(xmax=v), REFUSED,
                  ("line 2", "xmax", "Received"))
for label, value in [("inf", "inf"), ("1e400", "1e400"), ("2", "2"), ("text", "maybe")]:
    CASES += both(f"malignant-{label}", lambda b, v=value: b.manifest(cell(0, "malignant", v)),
                  REFUSED, ("line 2", "malignant", "Received"))
for label, value in [("inf", "inf"), ("1e400", "1e400"), ("neg", "-1"), ("half", "1.5")]:
    CASES += both(f"aln_count-{label}",
                  lambda b, v=value: b.manifest(cell(0, "aln_count", v)), REFUSED,
                  ("line 2", "aln_count", "Received"))
CASES += [
    Case("check-box-float", check_of(lambda b: b.boxed(cell(1, "y_min", "2.5"))), REFUSED,
         ("line 3", "box", "Received")),
    Case("check-box-outside", lambda b: ["check", b.boxed(cell(0, "x_max", "9000")),
                                         "--no-duplicates"], REFUSED, ("line 2", "outside")),
    Case("check-box-empty", check_of(lambda b: b.boxed(cell(0, "x_max", "2"))), REFUSED,
         ("line 2", "empty")),
    Case("check-malignant-nan-is-unknown", check_of(lambda b: b.manifest(cell(0, "malignant", "nan"))),
         VALID, ("no problems",)),
    Case("check-xml-text", check_of(lambda b: b.xml(xmin="left")), REFUSED, ("line 2", "xmin")),
    Case("check-xml-no-box", check_of(lambda b: b.xml(text="<annotation></annotation>")), REFUSED,
         ("line 2", "bndbox")),
    Case("check-xml-broken", check_of(lambda b: b.xml(text="<annotation><object>")), REFUSED,
         ("line 2", "XML")),
    Case("check-xml-bomb", check_of(lambda b: b.xml(text=(
        '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;'
        '&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><annotation>&c;'
        '</annotation>'))), REFUSED, ("line 2",)),
    Case("check-xml-missing", check_of(lambda b: b.manifest(cell(0, "annotation", "gone.xml"))),
         REFUSED, ("line 2", "not found")),
]

# Image cells and image files.
CASES += both("nul-in-image", lambda b: b.manifest(cell(0, "image", b.rows[0]["image"] + "\0x")),
              REFUSED, ("line 2", "image", "Received"))
CASES += both("truncated-jpeg", lambda b: b.image(b.encoded(".jpg", 0.6), "t.jpg"), REFUSED,
              ("line 2", "t.jpg", "truncated"))
CASES += both("truncated-png", lambda b: b.image(b.encoded(".png", 0.6), "t.png"), REFUSED,
              ("line 2", "t.png"))
CASES += both("truncated-bmp", lambda b: b.image(b.encoded(".bmp", 0.6), "t.bmp"), REFUSED,
              ("line 2", "t.bmp"))
CASES += both("text-as-png", lambda b: b.image(b"not an image", "t.png"), REFUSED,
              ("line 2", "t.png"))
CASES += [
    Case("check-truncated-tiff", check_of(lambda b: b.image(b.encoded(".tif", 0.5), "t.tif")),
         REFUSED, ("line 2", "t.tif")),
    Case("check-jpeg-whole", check_of(lambda b: b.image(b.encoded(".jpg"), "w.jpg")), VALID,
         ("no problems",)),
    Case("check-empty-image-file", check_of(lambda b: b.image(b"", "e.png")), REFUSED,
         ("line 2", "empty")),
    Case("check-image-missing", check_of(lambda b: b.manifest(cell(0, "image", "gone.png"))),
         REFUSED, ("line 2", "gone.png")),
    Case("check-image-is-folder", check_of(lambda b: b.manifest(cell(0, "image", str(b.root)))),
         REFUSED, ("line 2",)),
    Case("check-image-empty-cell", check_of(lambda b: b.manifest(cell(0, "image", ""))), REFUSED,
         ("line 2", "image")),
]

# Patient ids.
CASES += [
    Case("check-patient-trailing-space", lambda b: [
        "check", b.manifest(cell(1, "patient_id", b.rows[1]["patient_id"] + " ")),
        "--no-duplicates"], VALID, ("no problems",)),
    Case("check-patient-trailing-space-one-patient", lambda b: [
        "check", "--no-duplicates", b.manifest(lambda rows: [
            r.update(patient_id=r["patient_id"] + " ") for r in rows[:1]])], VALID, (),
         patient_count(16)),
    Case("check-patient-empty", check_of(lambda b: b.manifest(cell(0, "patient_id", " "))),
         REFUSED, ("line 2", "patient_id")),
    Case("check-patient-two-splits", check_of(lambda b: b.manifest(
        lambda rows: [r.update(split="train") for r in rows] and
        rows[1].update(split="test"))), REFUSED, ("split",)),
]

# The same image under two patients: listed twice, or a byte-identical copy.


def _with_splits(rows):
    """A split column: every third patient in val, test, train."""
    for r in rows:
        r["split"] = ("train", "val", "test")[int(r["patient_id"][1:]) % 3]
    return rows


def _other(split):
    return "test" if split != "test" else "train"


def _twice(b):
    """The first image listed again, under a new patient on the other side of the split."""
    rows = _with_splits([dict(r) for r in b.rows])
    rows.append({**rows[0], "patient_id": "P9999", "split": _other(rows[0]["split"])})
    return b.manifest(rows=rows)


def _copy(b, split=True):
    """A byte-identical copy of the first image under a new patient (across the split)."""
    rows = [dict(r) for r in b.rows]
    copy = b.path("copy.png")
    shutil.copy(rows[0]["image"], copy)
    rows.append({**rows[0], "image": copy, "patient_id": "P9999"})
    if split:
        _with_splits(rows[:-1])
        rows[-1]["split"] = _other(rows[0]["split"])
    return b.manifest(rows=rows)


def _mixed_copy(b, grouped=False):
    """A copy of the first image labelled the other way, under a new patient (or, grouped,
    under the same one, as --group-duplicates writes it)."""
    rows = [dict(r) for r in b.rows]
    copy = b.path("copy.png")
    shutil.copy(rows[0]["image"], copy)
    flipped = "0" if rows[0]["malignant"] == "1" else "1"
    rows.append({**rows[0], "image": copy, "patient_id": rows[0]["patient_id"] if grouped
                 else "P9999", "malignant": flipped, "alnm": "", "aln_count": ""})
    return b.manifest(rows=rows)


CASES += [
    Case("fit-image-twice-two-patients", fit_manifest(_twice), REFUSED,
         ("P9999", "group-duplicates")),
    Case("fit-copy-two-patients", fit_manifest(_copy), REFUSED, ("P9999", "group-duplicates")),
    Case("fit-copy-split-file", lambda b: FIT + ["--manifest", _copy(b, split=False),
                                                 "--split-file", b.split_file(), "--out",
                                                 b.path("run")], REFUSED,
         ("across", "group-duplicates")),
    Case("check-copy-across-split", lambda b: ["check", _copy(b)], WARNED, ("across splits",)),
    Case("check-copy-mixed-labels", lambda b: ["check", _mixed_copy(b)], WARNED,
         ("mix labels of 'malignant'", "line 2", "line 28")),
    Case("check-grouped-copy-mixed-labels", lambda b: ["check", _mixed_copy(b, grouped=True)],
         WARNED, ("mix labels of 'malignant'", "line 2", "line 28")),
    Case("check-group-duplicates", lambda b: ["check", _copy(b, False), "--group-duplicates",
                                              b.path("g.csv")], WARNED, ("merged",)),
]

# Configs.
for key, value, words in [
    ("model.hinge_weight", ".inf", ("model.hinge_weight", "finite")),
    ("data.roi_margin", ".inf", ("data.roi_margin", "finite")),
    ("train.learning_rate", ".nan", ("train.learning_rate",)),
    ("train.learning_rate", "1e400", ("train.learning_rate", "finite")),
    ("model.hinge_margin", "-.inf", ("model.hinge_margin",)),
    ("model.dropout", ".nan", ("model.dropout",)),
    ("data.val_fraction", ".inf", ("data.val_fraction",)),
    ("train.epochs", "1.5", ("train.epochs", "int")),
    ("train.epochs", "0", ("train.epochs",)),
    ("train.batch_size", ".inf", ("train.batch_size",)),
    ("data.image_size", "8", ("data.image_size",)),
    ("data.augment.brightness", ".inf", ("data.augment.brightness", "finite")),
]:
    CASES.append(Case(f"set-{key}={value}", lambda b, k=key, v=value: FIT + [
        "--set", f"{k}={v}", "--manifest", b.manifest_path, "--out", b.path("run")],
        REFUSED, words))
CASES += [
    Case("config-yaml-inf", lambda b: FIT + ["--config", b.config(tiny_yaml(model={
        "hinge_weight": ".inf"})),
                                             "--manifest", b.manifest_path, "--out", b.path("r")],
         REFUSED, ("hinge_weight", "finite", "Received")),
    Case("config-not-utf8", lambda b: FIT + ["--config", b.config(b"name: caf\xe9\n\xff\xfe"),
                                             "--manifest", b.manifest_path, "--out", b.path("r")],
         REFUSED, ("c.yaml", "UTF-8")),
    Case("config-python-tag", lambda b: FIT + ["--config", b.config(
        "name: !!python/object/apply:os.system ['echo hi']\n"), "--manifest", b.manifest_path,
        "--out", b.path("r")], REFUSED, ("c.yaml", "YAML")),
    Case("config-list", lambda b: FIT + ["--config", b.config("- 1\n- 2\n"), "--manifest",
                                         b.manifest_path, "--out", b.path("r")], REFUSED,
         ("mapping",)),
    Case("config-unknown-key", lambda b: FIT + ["--set", "train.epoch=3", "--manifest",
                                                b.manifest_path, "--out", b.path("r")],
         REFUSED, ("epoch",)),
    Case("config-missing", lambda b: FIT + ["--config", "/nonexistent/c.yaml", "--manifest",
                                            b.manifest_path, "--out", b.path("r")], REFUSED,
         ("c.yaml",)),
    Case("config-fractions-sum", lambda b: FIT + ["--set", "data.test_fraction=0.6", "--set",
                                                  "data.val_fraction=0.5", "--manifest",
                                                  b.manifest_path, "--out", b.path("r")],
         REFUSED, ("below 1",)),
]

# Manifest files as a whole.
CASES += [
    Case("check-manifest-not-utf8", lambda b: ["check", b.text(b"image,patient_id\n\xff\xfe,1\n",
                                                               "m.csv", True)], REFUSED, ("m.csv",)),
    Case("check-manifest-empty-file", lambda b: ["check", b.text("", "m.csv")], REFUSED,
         ("m.csv",)),
    Case("check-manifest-header-only", lambda b: ["check", b.text(
        "image,patient_id,annotation\n", "m.csv")], REFUSED, ("no rows",)),
    Case("check-manifest-missing-column", lambda b: ["check", b.manifest(
        lambda rows: [r.pop("patient_id") for r in rows])], REFUSED, ("patient_id",)),
    Case("check-manifest-binary", lambda b: ["check", b.text(bytes(range(256)) * 4, "m.csv",
                                                             True)], REFUSED, ("m.csv",)),
    Case("check-manifest-is-missing", lambda b: ["check", "/nonexistent/m.csv"], REFUSED,
         ("m.csv",)),
    Case("check-manifest-bom", lambda b: ["check", "--no-duplicates", b.text(
        b"\xef\xbb\xbf" + open(b.manifest_path, "rb").read(), "m.csv", True)], VALID,
         ("no problems",)),
    Case("check-manifest-crlf", lambda b: ["check", "--no-duplicates", b.text(
        open(b.manifest_path, "rb").read().replace(b"\n", b"\r\n"), "m.csv", True)], VALID,
         ("no problems",)),
    Case("check-split-bad-value", check_of(lambda b: b.manifest(cell(0, "split", "holdout"))),
         REFUSED, ("line 2", "split", "holdout")),
    Case("check-alnm-on-benign-warns", lambda b: ["check", "--no-duplicates", b.manifest(
        lambda rows: next(r for r in rows if r["malignant"] == "0").update(alnm="0"))],
         WARNED, ("alnm",)),
]

# Prediction CSVs.
for label, column, value, words in [
    ("p-nan", "p_malignancy", "nan", ("p.csv", "p_malignancy", "line 2")),
    ("p-empty", "p_malignancy", "", ("p.csv", "p_malignancy", "line 2")),
    ("p-text", "p_malignancy", "high", ("p.csv", "p_malignancy", "line 2", "high")),
    ("p-inf", "p_malignancy", "inf", ("p.csv", "p_malignancy", "line 2")),
    ("p-above-1", "p_malignancy", "1.5", ("p.csv", "p_malignancy", "line 2")),
    ("p-negative", "p_alnm", "-0.1", ("p.csv", "p_alnm", "line 2")),
    ("y-2", "y_malignancy", "2.0", ("p.csv", "y_malignancy", "line 2", "2.0")),
    ("y-text", "y_malignancy", "yes please", ("p.csv", "y_malignancy", "line 2")),
    ("y-inf", "y_malignancy", "inf", ("p.csv", "y_malignancy", "line 2")),
]:
    CASES.append(Case(f"evaluate-{label}", evaluate_csv(lambda b, c=column, v=value: b.preds(
        pcell(c, v))), REFUSED, words))
CASES += [
    Case("evaluate-valid-csv", evaluate_csv(lambda b: b.preds()), VALID, ("malignancy",)),
    Case("evaluate-no-p-column", evaluate_csv(lambda b: b.text("image,patient_id\na,b\n", "p.csv")),
         REFUSED, ("p_<task>",)),
    Case("evaluate-csv-not-utf8", evaluate_csv(lambda b: b.text(
        b"image,patient_id,p_malignancy\n\xff,1,0.5\n", "p.csv", True)), REFUSED, ("p.csv",)),
    Case("evaluate-csv-empty", evaluate_csv(lambda b: b.text("", "p.csv")), REFUSED, ("p.csv",)),
    Case("evaluate-threshold-nan", evaluate_csv(lambda b: b.preds(), "--threshold", "nan"),
         REFUSED, ("threshold",)),
    Case("evaluate-threshold-2", evaluate_csv(lambda b: b.preds(), "--threshold", "2"), REFUSED,
         ("threshold",)),
    Case("compare-p-nan", lambda b: ["compare", b.preds(pcell("p_malignancy", "nan")),
                                     b.preds()], REFUSED, ("p_malignancy", "line 2")),
    Case("compare-y-2", lambda b: ["compare", b.preds(), b.preds(pcell("y_malignancy", "2"))],
         REFUSED, ("y_malignancy", "line 2")),
    Case("compare-rows-per-lesion", lambda b: ["compare", b.preds(lambda rows: rows + [
        dict(rows[0])]), b.preds(lambda rows: rows + [dict(rows[0])])], VALID, ("malignancy",)),
]

# Output paths: one error path for I/O failures, nothing half-written.
CASES += [
    Case("predict-out-missing-dir", lambda b: ["predict", b.run, b.manifest_path, "--out",
                                               os.path.join(b.path("x"), "no", "p.csv")],
         REFUSED, ("p.csv", "folder")),
    Case("predict-out-unwritable", lambda b: ["predict", b.run, b.manifest_path, "--out",
                                             b.unwritable("p.csv")],
         REFUSED, ("p.csv", "Received")),
    Case("predict-out-is-input", lambda b: (lambda m: ["predict", b.run, m, "--out", m])(
        b.manifest()), REFUSED, ("--out", "input"), unchanged_input),
    Case("predict-out-is-folder", lambda b: ["predict", b.run, b.manifest_path, "--out",
                                             str(b.root)], REFUSED, ("--out",)),
    Case("predict-out-atomic", lambda b: ["predict", b.run, b.manifest_path, "--out",
                                          b.path("p.csv")], VALID, ("Wrote",)),
    Case("evaluate-out-unwritable", lambda b: ["evaluate", b.preds(), "--bootstrap", "20",
                                              "--out", b.unwritable("ev")],
         REFUSED, ("ev", "Received")),
    Case("evaluate-out-is-file", lambda b: ["evaluate", b.preds(), "--bootstrap", "20",
                                            "--out", b.text("x", "ev")], REFUSED, ("ev",)),
    Case("fit-out-unwritable", lambda b: FIT + ["--manifest", b.manifest_path, "--out",
                                               b.unwritable("run")],
         REFUSED, ("run", "Received")),
    Case("fit-out-is-file", lambda b: FIT + ["--manifest", b.manifest_path, "--out",
                                             b.text("x", "run")], REFUSED, ("run",)),
    Case("fit-out-not-empty", lambda b: FIT + ["--manifest", b.manifest_path, "--out",
                                               os.path.dirname(b.text("x", "f"))], REFUSED,
         ("empty",)),
    Case("export-out-existing-file", lambda b: ["export", b.run, "--format", "tflite", "--out",
                                                b.text("x", "model.tflite")], REFUSED,
         ("model.tflite", "Received")),
    Case("export-out-unwritable", lambda b: ["export", b.run, "--format", "savedmodel", "--out",
                                            b.unwritable("sm")], REFUSED,
         ("sm", "Received")),
    Case("compare-out-unwritable", lambda b: ["compare", b.preds(), b.preds(), "--out",
                                             b.unwritable("c.json")],
         REFUSED, ("c.json",)),
    Case("radiomics-out-unwritable", lambda b: ["radiomics", "extract", b.manifest_path,
                                                "--out", b.unwritable("f.csv")],
         REFUSED, ("f.csv",)),
]

# predict's other inputs.
CASES += [
    Case("predict-box-inf", lambda b: ["predict", b.run, b.rows[0]["image"], "--box",
                                       "0,0,inf,10"], REFUSED, ("--box", "Received")),
    Case("predict-box-text", lambda b: ["predict", b.run, b.rows[0]["image"], "--box", "a,b,c,d"],
         REFUSED, ("--box", "Received")),
    Case("predict-box-outside", lambda b: ["predict", b.run, b.rows[0]["image"], "--box",
                                           "0,0,5000,10"], REFUSED, ("outside",)),
    Case("predict-box-three", lambda b: ["predict", b.run, b.rows[0]["image"], "--box", "1,2,3"],
         REFUSED, ("--box",)),
    Case("predict-image-no-box", lambda b: ["predict", b.run, b.rows[0]["image"]], REFUSED,
         ("--box",)),
    Case("predict-single-image", lambda b: ["predict", b.run, b.rows[0]["image"], "--box",
                                            "2,2,30,30"], VALID, ("p_malignancy",)),
    Case("predict-bad-model-file", lambda b: ["predict", b.text("junk", "m.keras"),
                                              b.manifest_path], REFUSED, ("m.keras",)),
    Case("predict-empty-folder", lambda b: ["predict", os.path.dirname(b.text("x", "f")),
                                            b.manifest_path], REFUSED, ("Accepted",)),
    Case("predict-nonfinite-manifest", lambda b: ["predict", b.run,
                                                  b.boxed(cell(0, "y_max", "1e400"))],
         REFUSED, ("line 2", "y_max")),
    Case("predict-batch-size-0", lambda b: ["predict", b.run, b.manifest_path, "--batch-size",
                                            "0"], REFUSED, ("batch",)),
]

# Untrusted models.
CASES += [
    Case("predict-savedmodel-writefile", lambda b: ["predict", evil_savedmodel(b),
                                                    b.manifest_path], REFUSED,
         ("WriteFile", "--trust-model"), evil_unwritten),
    Case("predict-savedmodel-readfile", lambda b: ["predict", evil_savedmodel(b, "read"),
                                                   b.manifest_path], REFUSED,
         ("ReadFile", "--trust-model")),
    Case("bench-savedmodel-writefile", lambda b: ["bench", "predict", "--savedmodel",
                                                  evil_savedmodel(b), "--runs", "1",
                                                  "--batches", "1", "--out",
                                                  b.path("b.json")], REFUSED, ("WriteFile",)),
    Case("predict-savedmodel-trusted", lambda b: ["predict", "--trust-model",
                                                  evil_savedmodel(b, "read"), b.manifest_path],
         VALID, ("p_malignancy",)),
]

# Packs: pack.json checked against the zip before anything is allocated.
for label, meta, words in [
    ("count-huge", {"count": 10 ** 9}, ("count", "Received")),
    ("count-text", {"count": "4"}, ("count", "Received")),
    ("count-negative", {"count": -1}, ("count", "Received")),
    ("count-float", {"count": 4.0}, ("count", "Received")),
    ("image-size-text", {"image_size": "big"}, ("image_size", "Received")),
    ("image-size-huge", {"image_size": 10 ** 9}, ("image_size", "Received")),
    ("image-size-zero", {"image_size": 0}, ("image_size", "Received")),
    ("channels-list", {"channels": [1, 1, 1, 1]}, ("channels", "Received")),
    ("channels-letters", {"channels": "abcd"}, ("channels", "Received")),
    ("codec-unknown", {"codec": "gif"}, ("codec", "Received")),
    ("roi-margin-inf", {"roi_margin": float("inf")}, ("roi_margin", "Received")),
    ("quality-text", {"quality": "high"}, ("quality", "Received")),
    ("no-count", {"count": ...}, ("count",)),
]:
    CASES.append(Case(f"pack-{label}", lambda b, m=meta: ["check", b.pack(**m)], REFUSED, words))
CASES += [
    Case("pack-valid", lambda b: ["check", b.pack()], VALID, ("no problems",)),
    Case("pack-not-zip", lambda b: ["check", b.text(b"PK\x03\x04junk", "x.pack", True)],
         REFUSED, ("x.pack",)),
]

# A run whose backup was replaced by another model's file: refused, and marked failed.


def _alien_backup(b):
    from tests.conftest import Interrupt, interrupt_after_epoch, tiny_config_dict
    from usmtl.config import config_from_dict
    from usmtl.training.fit import fit

    run = b.path("run")
    cfg = config_from_dict(tiny_config_dict(model={"small_widths": [4, 8]}))
    with pytest.raises(Interrupt):  # killed after epoch 1: a backup to resume from
        fit(cfg, b.phantoms, run, verbose=0, callbacks=[interrupt_after_epoch(0)])
    backup = os.path.join(run, "backup")
    with open(os.path.join(backup, "complete.json")) as f:
        pointer = json.load(f)
    with open(os.path.join(b.run, "checkpoints", "best.keras"), "rb") as f:
        alien = f.read()  # the shared run's model: other layer widths
    with open(os.path.join(backup, pointer["file"]), "wb") as f:
        f.write(alien)
    with open(os.path.join(backup, "complete.json"), "w") as f:
        json.dump({**pointer, "bytes": len(alien)}, f)
    return ["fit", "--resume", "--out", run]


def _marked_failed(b, argv, output):
    with open(os.path.join(argv[-1], "run.json")) as f:
        return json.load(f)["status"] == "failed"


CASES.append(Case("fit-resume-alien-backup", _alien_backup, REFUSED,
                  ("backup", "does not fit", "Received"), _marked_failed))

# validate: unlabelled children refused before any prediction.
CASES += [
    Case("validate-unlabelled-children", lambda b: ["validate", b.run, b.manifest(
        lambda rows: [r.update(alnm="", aln_count="") for r in rows]), "--out", b.path("v"),
        "--bootstrap", "10"], REFUSED, ("alnm", "skip-unlabelled")),
]


# ---------------------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------------------

CLASSES = ("refusal", "accepted", "hang", "traceback-or-wrong-blame", "exit0-wrong")


def observed(case: Case, bench, argv, result) -> tuple[str, str]:
    """``(class, text)``: what a user saw, sorted into the issue's outcome classes."""
    import traceback

    text = result.output
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        return "traceback-or-wrong-blame", text + "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__))
    if "Traceback (most recent call last)" in text:
        return "traceback-or-wrong-blame", text
    found = all(w.lower() in text.lower() for w in case.words)
    if case.check is not None and not case.check(bench, argv, text):
        return "exit0-wrong", text  # what it left behind is wrong, whatever it printed
    if result.exit_code != 0:
        return ("refusal" if found else "traceback-or-wrong-blame"), text
    if case.expect == REFUSED or (case.expect == WARNED and not found):
        return "exit0-wrong", text
    return "accepted", text


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, bench):
    argv = [str(a) for a in case.make(bench)]
    result = run_cli(argv)
    kind, text = observed(case, bench, argv, result)
    report = os.environ.get("USMTL_PROBE_REPORT")
    if report:
        with open(report, "a") as f:
            f.write(json.dumps({"id": case.id, "class": kind, "text": text[-600:]}) + "\n")
    wanted = "refusal" if case.expect == REFUSED else "accepted"
    assert kind == wanted, f"{case.id}: {kind}; argv {argv}\n{text[-3000:]}"


def test_cases_are_many_and_unique():
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES)


def test_full_disk_leaves_no_half_csv(bench, monkeypatch):
    """A disk that fills while ``predict --out`` writes: an error naming the file, and no file
    (every CSV is written whole or not at all, usmtl.atomic)."""
    import errno

    import usmtl.atomic

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = bench.path("p.csv")
    monkeypatch.setattr(usmtl.atomic.os, "fsync", full)
    result = run_cli(["predict", bench.run, bench.manifest_path, "--out", out])
    assert result.exit_code == 2, result.output
    assert "p.csv" in result.output and "No space left" in result.output
    assert not os.path.exists(out)
    assert os.listdir(os.path.dirname(out)) == []  # no temporary left either
