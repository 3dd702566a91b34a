"""``make gpu-check``: on a lent GPU machine, in one call (issue 24), the project's training
speed and the paper's configuration on BUS-BRA, with everything written under ``--out``.

Stages, each recorded in ``OUT/gpu_check.json`` as soon as it ends (a call killed at its
time limit keeps what had finished):

1. install: the wheels of the bundle (``make gpu-bundle``) whose distribution this Python
   lacks are unpacked into ``--site`` (what ``pip install --no-deps --target`` does, with no
   pip, index or build step needed), which goes on the path; usmtl runs from this checkout
   (``PYTHONPATH``), with config files given by path. Versions and the GPU are printed.
2. bench: ``usmtl bench train --backend jax`` in a subprocess (its memory is freed before
   training): the config's model (ResNet50 at 256 px for BUS-BRA), ``--bench-batch`` 128,
   bfloat16, the batch on the device; images/s against the anchors of the issue; then a
   few more steps under the JAX profiler, whose top ops are reported (:func:`top_ops`).
3. probe: the paper's Multi-Task + HL configuration (:data:`PAPER`: from scratch, Adam
   1e-4, the rate /10 every 50 epochs, the last epoch's model) for ``--probe-epochs``
   epochs; the steady epoch time (epochs after the first) and the fixed cost (data, XLA
   compilation, outputs) set how many epochs fit in the time left (:func:`plan_epochs`).
4. paper: that configuration for those epochs (at most ``--max-epochs``, the paper's 200),
   trained with ``usmtl experiment``'s driver on the pack's own split and scored on the
   test split, each child within its cohort (``birads5`` within the malignant masses).
   Fewer epochs than 200 keep the paper's schedule: its first k epochs, exactly.
5. variants: the other three (Multi-Task, Single-BM, Single-ALNM), one repeat each, with
   the same epochs, while the time left is enough for one more (the probe's estimate).

Under ``--out``: ``gpu_check.json``, ``summary.txt`` (the table printed last),
``bench_train.json``, ``experiment/`` (tables.md, results.csv, summary.csv, ...) and each
run folder's small files (history, metrics, predictions; no checkpoints).

The test suite runs this script with tiny sizes on CPU JAX (tests/test_gpu_check.py), so it
cannot rot between the rare times a GPU is lent. No TensorFlow is imported.

Usage (on the GPU machine; ``make gpu-check OUT=dir``)::

    python3 tools/gpu_check.py --bundle gpu-bundle --out OUT --budget 440
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
import zipfile
from importlib import metadata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_bundle import BUNDLE_FILE, PACK_NAME, wheel_name_version  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Images/s of a two-head ResNet50 with the hinge, 256 px, batch 128, bfloat16, on one H100
# (issue 24), and the rate below which a JAX profile is called for.
ANCHORS = {"PyTorch eager": 2867, "torch.compile": 3857, "Keras fit on JAX, host uint8": 3713,
           "Keras fit on JAX, steps_per_execution 8": 3741}
TARGET = 5000

# Li, Guo et al. (2022): from scratch here (the GPU machine downloads nothing), Adam 1e-4,
# 200 epochs with the rate /10 every 50, the last epoch's model.
PAPER = ["model.weights=none", "train.learning_rate=0.0001", "train.lr_decay_every=50",
         "train.lr_decay_factor=0.1", "train.checkpoint=last", "train.epochs=200"]
VARIANTS = ["multitask-hl", "multitask", "single-bm", "single-alnm"]
PROTOCOL_RUNS = 4 * 5  # the paper's four variants, five repeats each
VERSIONS = ["jax", "jaxlib", "keras", "numpy", "scipy", "ml-dtypes", "optree", "h5py", "pandas",
            "scikit-learn", "opencv-python", "opencv-python-headless", "pillow"]
WORK_MARK = ".gpu-check-work"
BULKY = {"checkpoints", "backup", "cache", "logs"}  # run folders' parts left behind


# ---------------------------------------------------------------------------------------
# Pure parts (tested directly)
# ---------------------------------------------------------------------------------------


def plan_epochs(seconds_left: float, fixed_s: float, epoch_s: float, max_epochs: int,
                slack: float = 1.1, reserve_s: float = 10.0) -> int:
    """How many epochs a run can train in ``seconds_left``: a run costs ``fixed_s`` (data,
    compilation, outputs) plus ``epoch_s`` a epoch, times ``slack``, with ``reserve_s``
    kept for writing results. At most ``max_epochs``; 0 when not even one fits."""
    if epoch_s <= 0:
        return max_epochs
    usable = (seconds_left - reserve_s) / slack - fixed_s
    return int(max(0, min(max_epochs, math.floor(usable / epoch_s))))


def run_cost(fixed_s: float, epoch_s: float, epochs: int, slack: float = 1.1) -> float:
    """The expected seconds of one run of ``epochs`` epochs (see :func:`plan_epochs`)."""
    return slack * (fixed_s + epochs * epoch_s)


def install_wheels(wheels: list[str], site: str) -> dict:
    """Unpack each wheel whose distribution is not importable here into ``site`` and put
    ``site`` on the path (``sys.path`` last, so it never shadows the machine's own
    packages; ``PYTHONPATH`` for subprocesses). Returns ``{"installed", "present"}`` as
    ``"name version"`` lines (present: the version this Python already has)."""
    os.makedirs(site, exist_ok=True)
    if site not in sys.path:
        sys.path.append(site)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.environ.get("PYTHONPATH"), site) if p)
    installed, present = [], []
    for wheel in sorted(wheels):
        name, version = wheel_name_version(wheel)
        try:
            present.append(f"{name} {metadata.version(name)}")
            continue
        except metadata.PackageNotFoundError:
            pass
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
        installed.append(f"{name} {version}")
    import importlib

    importlib.invalidate_caches()
    for line in installed:  # each must now be found where it was unpacked
        metadata.version(line.split()[0])
    return {"installed": installed, "present": present, "site": site}


def imported_distributions() -> list[str]:
    """The distributions of the third-party modules this process has imported."""
    owners = metadata.packages_distributions()
    found = set()
    for name in list(sys.modules):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top.startswith("_"):
            continue
        found.update(owners.get(top, []))
    return sorted(d.lower().replace("_", "-") for d in found)


def top_ops(folder: str, n: int = 12) -> list[dict]:
    """The ops that took the most time in the newest Perfetto trace (``jax.profiler.trace``)
    under ``folder``: the accelerator's "XLA Ops" row when the trace has one, else its other
    rows, else (a CPU) the host's threads but Python's. ``[{"op", "ms", "share"}]``, the
    time summed over the profiled steps, the share of all ops' time."""
    paths = sorted(glob.glob(os.path.join(folder, "**", "perfetto_trace.json.gz"),
                            recursive=True), key=os.path.getmtime)
    if not paths:
        return []
    with gzip.open(paths[-1]) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    process, thread = {}, {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            process[e["pid"]] = e["args"]["name"]
        elif e.get("ph") == "M" and e.get("name") == "thread_name":
            thread[(e["pid"], e.get("tid"))] = e["args"]["name"]
    ops = [e for e in events if e.get("ph") == "X" and not e.get("name", "$").startswith("$")]
    device = [e for e in ops if "/device:" in process.get(e.get("pid"), "")]
    xla_ops = [e for e in device if thread.get((e["pid"], e.get("tid"))) == "XLA Ops"]
    chosen = xla_ops or [e for e in device if thread.get((e["pid"], e.get("tid"))) != "XLA Modules"] \
        or [e for e in ops if thread.get((e["pid"], e.get("tid"))) != "python"]
    totals = collections.Counter()
    for e in chosen:
        totals[e["name"]] += float(e.get("dur", 0))
    whole = sum(totals.values()) or 1.0
    return [{"op": name, "ms": round(us / 1000, 3), "share": round(us / whole, 4)}
            for name, us in totals.most_common(n)]


def format_table(rows: list[dict], columns: list[str]) -> str:
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3f}"
    return str(value)


# ---------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------


class Check:
    """The stages above, sharing the deadline and the report."""

    def __init__(self, args):
        self.args = args
        self.started = time.monotonic()
        self.deadline = self.started + args.budget
        self.out = os.path.abspath(args.out)
        self.work = os.path.abspath(args.work)
        self.report = {"issue": 24, "started": _now(), "budget_s": args.budget,
                       "config": args.config, "overrides": PAPER + list(args.set),
                       "stages": {}, "failed": []}
        self.failed = False

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        self.report["elapsed_s"] = round(time.monotonic() - self.started, 1)
        path = os.path.join(self.out, "gpu_check.json")
        with open(path + ".tmp", "w") as f:
            json.dump(self.report, f, indent=2, default=_plain)
        os.replace(path + ".tmp", path)

    def stage(self, name: str, function) -> dict | None:
        """Run one stage; its result (or its error) goes into the report at once."""
        print(f"\n== {name} ({self.left():.0f} s left of {self.args.budget:.0f})", flush=True)
        began = time.monotonic()
        try:
            result = function()
        except Exception as exc:  # a failed stage is reported; the next ones still run
            result = {}
            self._failed(name, exc, result, "error")
        result = dict(result or {}, seconds=round(time.monotonic() - began, 1))
        self.report["stages"][name] = result
        self.save()
        return result

    def _failed(self, name: str, exc: Exception, into: dict, key: str) -> None:
        self.failed = True
        self.report["failed"].append(name)
        into[key] = f"{type(exc).__name__}: {exc}"
        into[f"{key}_traceback"] = traceback.format_exc()[-4000:]
        print(f"gpu-check: {name} failed: {into[key]}", file=sys.stderr, flush=True)

    # -- stages ---------------------------------------------------------------------------

    def install(self) -> dict:
        wheels = sorted(glob.glob(os.path.join(self.args.bundle, "wheels", "*.whl")))
        result = install_wheels(wheels, os.path.abspath(self.args.site))
        for line in result["installed"]:
            print(f"installed {line}")
        print(f"already here: {', '.join(result['present']) or 'none'}")
        return result

    def versions(self) -> dict:
        versions = {"python": sys.version.split()[0]}
        for name in VERSIONS:
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                pass
        import usmtl

        versions["usmtl"] = f"{usmtl.__version__} ({os.path.dirname(usmtl.__file__)})"
        gpu = _nvidia_smi()
        print("\n".join(f"{k}: {v}" for k, v in versions.items()))
        print(f"nvidia-smi: {gpu}")
        return {"versions": versions, "nvidia_smi": gpu}

    def bench(self) -> dict:
        """``usmtl bench train --backend jax --data-on-device`` in a subprocess, through
        ``python -m usmtl.bench`` (the same function), which also profiles a few steps."""
        out = os.path.join(self.out, "bench_train.json")
        a = self.args
        profile = os.path.join(self.work, "profile")
        kwargs = {"backend": "jax", "config_path": a.config, "overrides": list(a.set),
                  "batch_size": a.bench_batch, "precision": a.bench_precision,
                  "data_on_device": True, "steps": a.bench_steps, "warmup": a.bench_warmup,
                  "profile_dir": profile if a.profile else None}
        command = [sys.executable, "-m", "usmtl.bench", "train", json.dumps(kwargs), out]
        print(" ".join(command), flush=True)
        # Capped, so that a slow bench leaves the paper's run most of the budget.
        timeout = max(30.0, min(self.left() - 60, 0.45 * self.args.budget))
        done = subprocess.run(command, cwd=REPO, timeout=timeout,
                              env={**os.environ, "KERAS_BACKEND": "jax"})
        if done.returncode != 0 or not os.path.isfile(out):
            raise RuntimeError(f"usmtl bench train exited with {done.returncode}")
        with open(out) as f:
            bench = json.load(f)
        rate = bench["images_per_s"]
        return {"images_per_s": rate, "ms_per_step": 1000 * bench["seconds"] / bench["steps"],
                "backbone": bench["backbone"], "image_size": bench["image_size"],
                "batch_size": bench["batch_size"], "precision": bench["precision"],
                "data_on_device": bench["data_on_device"], "devices": bench["machine"].get("devices"),
                "vs_anchors": {k: round(rate / v, 3) for k, v in ANCHORS.items()},
                "below_target": rate < TARGET, "memory": bench.get("memory"),
                **self._top_ops(profile)}

    def _top_ops(self, profile: str) -> dict:
        """``{"top_ops": [...]}``, or why there are none (a profile is extra)."""
        if not self.args.profile:
            return {"top_ops": []}
        try:
            return {"top_ops": top_ops(profile)}
        except Exception as exc:
            return {"top_ops": [], "top_ops_error": f"{type(exc).__name__}: {exc}"}

    def probe(self) -> dict:
        from usmtl.config import apply_variant
        from usmtl.training.fit import fit

        cfg = apply_variant(self._config([f"train.epochs={self.args.probe_epochs}"]),
                            "multitask-hl")
        clock = _epoch_clock()
        began = time.monotonic()
        fit(cfg, self.args.pack, os.path.join(self.work, "probe"), verbose=0, callbacks=[clock])
        wall = time.monotonic() - began
        epochs = clock.epochs
        steady = statistics.median(epochs[1:]) if len(epochs) > 1 else epochs[0]
        train = [t for t in clock.train[1:] if t is not None]
        import jax

        result = {"epochs": len(epochs), "epoch_s": epochs, "steady_epoch_s": steady,
                  "steady_train_s": statistics.median(train) if train else None,
                  # outside the epochs (data, model, outputs) plus the first epoch's extra
                  # (compilation); never less for a slow later epoch
                  "fixed_s": max(0.0, wall - sum(epochs)) + max(0.0, epochs[0] - steady),
                  "wall_s": wall,
                  "device": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform}
        result["after_steps_s"] = (None if result["steady_train_s"] is None
                                   else steady - result["steady_train_s"])
        result["protocol_projected_s"] = PROTOCOL_RUNS * (result["fixed_s"] + 200 * steady)
        _copy_run(os.path.join(self.work, "probe"), os.path.join(self.out, "probe"))
        print(f"epoch {steady:.2f} s (steps {result['steady_train_s'] or 0:.2f} s, then "
              f"validation, history, backup), fixed {result['fixed_s']:.1f} s, on "
              f"{result['device']}")
        return result

    def experiment(self, probe: dict) -> dict:
        from usmtl.experiment import run_experiment

        max_epochs = min(self.args.max_epochs, self._config().train.epochs)
        fixed, epoch = probe["fixed_s"], probe["steady_epoch_s"]
        epochs = plan_epochs(self.left(), fixed, epoch, max_epochs)
        result = {"epochs_planned": epochs, "max_epochs": max_epochs, "runs": {}, "skipped": {}}
        if epochs < 1:
            result["skipped"][self.args.variants[0]] = (
                f"not one epoch fits: {self.left():.0f} s left, fixed {fixed:.0f} s")
            return result
        cfg = self._config([f"train.epochs={epochs}"])
        exp_dir = os.path.join(self.work, "experiment")
        done = []
        for variant in self.args.variants:
            cost = run_cost(fixed, epoch, epochs)
            if done and cost > self.left() - 10:
                result["skipped"][variant] = (f"{self.left():.0f} s left, a run needs about "
                                              f"{cost:.0f} s")
                continue
            print(f"{variant}: {epochs} epochs, about {cost:.0f} s", flush=True)
            began = time.monotonic()
            try:
                tables = run_experiment(cfg, self.args.pack, exp_dir, repeats=1,
                                        variants=done + [variant])
            except Exception as exc:  # the runs that finished stay in the report
                self._failed(f"experiment {variant}", exc, result.setdefault("errors", {}),
                             variant)
                continue
            done.append(variant)
            result["runs"][variant] = self._run_record(
                exp_dir, variant, tables["results"], time.monotonic() - began)
            result["tables"] = tables["markdown"]
            _copy_run(exp_dir, os.path.join(self.out, "experiment"))
            self.report["stages"]["experiment"] = result  # so far, in case time runs out
            self.save()
        return result

    # -- helpers -----------------------------------------------------------------------

    def _config(self, more=()):
        from usmtl.config import load_config

        return load_config(self.args.config, PAPER + list(self.args.set) + list(more))

    def _run_record(self, exp_dir, variant, results, seconds) -> dict:
        import pandas as pd

        run_dir = os.path.join(exp_dir, "runs", variant, "repeat-1")
        history = pd.read_csv(os.path.join(run_dir, "history.csv"))
        with open(os.path.join(run_dir, "run.json")) as f:
            run = json.load(f)
        rows = results[(results["variant"] == variant) & (results["metric"] == "auc")]
        tasks = {r["task"]: {"auc": float(r["value"]), "cohort": r["cohort"],
                             "n_images": int(r["n_images"]), "positives": int(r["positives"])}
                 for _, r in rows.iterrows()}
        return {"epochs_run": int(len(history)), "seconds": round(seconds, 1),
                "run_seconds": run.get("seconds"), "train_images": run.get("train_images"),
                "precision": run.get("precision"), "backend": run.get("backend"),
                "steps_per_execution": run.get("steps_per_execution"), "test": tasks}


def _epoch_clock():
    """A Keras callback timing each epoch whole (it runs after the built-in callbacks:
    validation, history, backup) and up to its last step (the device synchronised)."""
    import jax
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs, self.train = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self.began, self.steps_done = time.perf_counter(), None

        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 >= (self.params.get("steps") or math.inf):
                state = getattr(self.model, "_jax_state", None)
                if state is not None:
                    jax.block_until_ready(state)
                self.steps_done = time.perf_counter() - self.began

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append(time.perf_counter() - self.began)
            self.train.append(self.steps_done)

    return EpochClock()


def _copy_run(run_dir: str, dest: str) -> None:
    """A run folder's small files (history, metrics, predictions, config, split)."""
    for root, dirs, files in os.walk(run_dir):
        dirs[:] = [d for d in dirs if d not in BULKY]
        for name in files:
            if name.endswith((".keras", ".tmp", ".lock")):
                continue
            source = os.path.join(root, name)
            target = os.path.join(dest, os.path.relpath(source, run_dir))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(source, target)


def _nvidia_smi() -> str:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=30)
        return done.stdout.strip() or done.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"not available ({type(exc).__name__})"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _plain(value):
    """JSON for NumPy scalars (AUCs, counts)."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _prepare_work(work: str) -> None:
    """A fresh work folder: training resumes runs it finds, so a previous call's are removed
    (only from a folder this script made)."""
    if os.path.isdir(work) and os.listdir(work):
        if not os.path.isfile(os.path.join(work, WORK_MARK)):
            raise SystemExit(f"gpu-check: --work {work} exists and was not made by gpu-check; "
                             f"name another folder. Received: {work}")
        shutil.rmtree(work)
    os.makedirs(work, exist_ok=True)
    open(os.path.join(work, WORK_MARK), "w").close()


def summary(report: dict) -> str:
    """The table printed last (and written to summary.txt)."""
    stages = report["stages"]
    lines = ["", "== gpu-check summary"]
    versions = stages.get("versions", {}).get("versions", {})
    probe, bench = stages.get("probe", {}), stages.get("bench", {})
    lines.append(f"GPU: {stages.get('versions', {}).get('nvidia_smi', '?')}; JAX device "
                 f"{probe.get('device', '?')}; jax {versions.get('jax', '?')}, keras "
                 f"{versions.get('keras', '?')}, python {versions.get('python', '?')}")
    if "images_per_s" in bench:
        lines.append(
            f"bench train: {bench['images_per_s']:,.0f} images/s ({bench['backbone']}, "
            f"{bench['image_size']} px, batch {bench['batch_size']}, {bench['precision']}, data "
            f"on device; {bench['ms_per_step']:.1f} ms/step); anchors on one H100: "
            + ", ".join(f"{k} {v:,}" for k, v in ANCHORS.items())
            + f" (x{bench['vs_anchors']['torch.compile']:.2f} torch.compile); "
            + ("below" if bench["below_target"] else "at or above") + f" {TARGET:,}")
        if bench.get("top_ops"):
            lines.append("top ops of the profiled steps (share of the ops' time): " + "; ".join(
                f"{o['op'][:60]} {100 * o['share']:.1f}%" for o in bench["top_ops"][:10]))
    else:
        lines.append(f"bench train: {bench.get('error', 'not run')}")
    if "steady_epoch_s" in probe:
        epoch = probe["steady_epoch_s"]
        protocol = probe["protocol_projected_s"]
        lines.append(f"fit: {epoch:.2f} s per epoch ({probe['steady_train_s'] or 0:.2f} s of "
                     f"steps), {probe['fixed_s']:.0f} s fixed per run; the protocol (4 variants "
                     f"x 5 repeats x 200 epochs) would take {protocol / 3600:.2f} h")
    else:
        lines.append(f"fit probe: {probe.get('error', 'not run')}")
    experiment = stages.get("experiment", {})
    rows = []
    for variant, run in experiment.get("runs", {}).items():
        for task, m in run["test"].items():
            rows.append({"variant": variant, "epochs": run["epochs_run"],
                         "seconds": run["seconds"], "task": task, "cohort": m["cohort"],
                         "n": m["n_images"], "positives": m["positives"], "test AUC": m["auc"]})
    if rows:
        lines.append(format_table(rows, ["variant", "epochs", "seconds", "task", "cohort", "n",
                                         "positives", "test AUC"]))
    for variant, why in experiment.get("skipped", {}).items():
        lines.append(f"{variant}: not run ({why})")
    for variant, error in experiment.get("errors", {}).items():
        if not variant.endswith("_traceback"):
            lines.append(f"{variant}: failed: {error}")
    if "error" in experiment:
        lines.append(f"experiment: {experiment['error']}")
    lines.append(f"failed stages: {', '.join(report['failed']) or 'none'}; "
                 f"{report.get('elapsed_s', 0):.0f} s of the {report['budget_s']:.0f} s budget")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="where results go (created)")
    p.add_argument("--bundle", default="gpu-bundle", help="the folder of make gpu-bundle")
    p.add_argument("--pack", help=f"the training data (default: BUNDLE/{PACK_NAME})")
    p.add_argument("--config", default=os.path.join("configs", "busbra.yaml"),
                   help="config file (by path: presets need an installed usmtl)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override after the paper's (sizes for a dry run)")
    p.add_argument("--budget", type=float, default=440.0, help="seconds for the whole check")
    p.add_argument("--site", default=os.path.join("build", "gpu-site"),
                   help="where missing wheels are unpacked")
    p.add_argument("--work", default=os.path.join("build", "gpu-work"),
                   help="run folders with checkpoints (cleared first)")
    p.add_argument("--bench-batch", type=int, default=128)
    p.add_argument("--bench-precision", default="mixed_bfloat16")
    p.add_argument("--bench-steps", type=int, default=50)
    p.add_argument("--bench-warmup", type=int, default=5)
    p.add_argument("--no-profile", dest="profile", action="store_false",
                   help="no JAX profile of a few bench steps after the timed ones")
    p.add_argument("--probe-epochs", type=int, default=2)
    p.add_argument("--max-epochs", type=int, default=200)
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="the first is the paper's configuration; the rest run if time is left")
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    args.pack = os.path.abspath(args.pack or os.path.join(args.bundle, PACK_NAME))
    args.config = os.path.abspath(args.config)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for path, what in ((args.pack, "--pack"), (args.config, "--config")):
        if not os.path.isfile(path):
            raise SystemExit(f"gpu-check: {what} not found (make gpu-bundle makes the pack). "
                             f"Received: {path}")
    _prepare_work(os.path.abspath(args.work))
    os.environ["KERAS_BACKEND"] = "jax"
    # XLA's compiled programs are kept on disk, for the bench's subprocess and this process:
    # a program compiled once (the variables' initialisers, a run's step while the paper's
    # schedule is constant) is not compiled again by a later run.
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(os.path.abspath(args.work), "jax-cache")
    check = Check(args)
    bundle_file = os.path.join(args.bundle, BUNDLE_FILE)
    if os.path.isfile(bundle_file):
        with open(bundle_file) as f:
            check.report["bundle"] = json.load(f)
    check.stage("install", check.install)
    check.stage("versions", check.versions)
    check.stage("bench", check.bench)  # before this process starts JAX on the GPU
    probe = check.stage("probe", check.probe)
    if "steady_epoch_s" in probe:
        check.stage("experiment", lambda: check.experiment(probe))
    check.report["imported_distributions"] = imported_distributions()
    check.report["tensorflow_imported"] = "tensorflow" in sys.modules
    check.save()
    text = summary(check.report)
    with open(os.path.join(args.out, "summary.txt"), "w") as f:
        f.write(text.lstrip() + "\n")
    print(text, flush=True)
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
