"""``make gpu-bundle``: everything a GPU machine lacks for ``make gpu-check``, in one ignored
folder that travels with the working tree (issue 24).

The GPU machine has Python 3.12, JAX (so also SciPy, ml_dtypes, opt_einsum), NumPy, OpenCV,
Pillow, click, PyYAML, h5py, pandas and scikit-learn; no TensorFlow, no Keras, and no
``../shared`` data. This writes into ``--out`` (default ``gpu-bundle/``):

- ``wheels/``: the CPython 3.12 manylinux x86-64 wheels of :data:`WHEELS` (Keras and what
  the JAX path of usmtl imports beyond the machine's packages), one version each: the
  version installed where this runs, which is what the project is tested with
  (``pip download --no-deps --only-binary=:all:``). ``gpu-check`` installs only those whose
  distribution the machine lacks.
- ``busbra256.pack``: BUS-BRA (``usmtl import busbra``) cropped at the config's size with
  the config's patient split stored in it (``usmtl pack --split-file``), so training needs
  neither the images nor ``../shared``. Lossless WebP (``--codec auto``): exact crops, so
  no AUC change to state.
- ``bundle.json``: what is there (wheel files with versions, the pack and its split counts,
  the sizes).

It then prints the bundle's size, the working tree's (the files git does not ignore, which
is what travels with it) and their sum, and fails if the sum reaches 64 MiB.

Usage (here, where ``../shared`` is)::

    make gpu-bundle            # = python tools/gpu_bundle.py --out gpu-bundle
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from importlib import metadata

# Keras 3 and its runtime requirements (keras' own metadata: absl-py, h5py, ml-dtypes, namex,
# numpy, optree, packaging, rich; rich: markdown-it-py, pygments; markdown-it-py: mdurl;
# optree: typing-extensions), less what the machine has (h5py, numpy); then what usmtl
# imports on the JAX training path that the machine lacks: filelock (a run's lock), tqdm
# (progress bars). ml-dtypes comes with JAX; its wheel is here in case, installed only when
# missing, never over JAX's own.
WHEELS = ["keras", "absl-py", "rich", "namex", "optree", "ml-dtypes", "packaging",
          "markdown-it-py", "mdurl", "pygments", "typing-extensions", "filelock", "tqdm"]

# The distributions the GPU machine has (the list and what they require); with
# WHEELS and the standard library, all that the gpu-check path may import (the dry-run
# test checks it).
MACHINE = ["jax", "jaxlib", "scipy", "ml-dtypes", "opt-einsum", "numpy",
           "opencv-python", "opencv-python-headless", "pillow", "click", "pyyaml", "h5py",
           "pandas", "python-dateutil", "pytz", "tzdata", "six", "scikit-learn", "joblib",
           "threadpoolctl", "narwhals", "cloudpickle", "usmtl"]

PLATFORMS = ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_27_x86_64",
             "manylinux_2_28_x86_64"]
PYTHON_VERSION = "3.12"
PACK_NAME = "busbra256.pack"
BUNDLE_FILE = "bundle.json"
LIMIT_BYTES = 64 * 2**20


def _normal(name: str) -> str:
    """A distribution name as wheel files spell it (PEP 427: ``-`` and ``.`` as ``_``)."""
    return name.lower().replace("-", "_").replace(".", "_")


def wheel_name_version(filename: str) -> tuple[str, str]:
    """``(normalised distribution, version)`` of a wheel file name."""
    parts = os.path.basename(filename).split("-")
    if len(parts) < 5 or not filename.endswith(".whl"):
        raise ValueError(f"Not a wheel file name. Received: {filename!r}")
    return _normal(parts[0]), parts[1]


def download_wheels(folder: str) -> list[dict]:
    """The wheels of :data:`WHEELS` at this environment's versions in ``folder``; other
    wheel files there are removed (one version each). Returns ``[{file, name, version}]``.

    Raises:
        SystemExit: a distribution not installed here, or pip failing (its output shown).
    """
    pins = {}
    for name in WHEELS:
        try:
            pins[_normal(name)] = (name, metadata.version(name))
        except metadata.PackageNotFoundError:
            raise SystemExit(f"gpu-bundle: {name} is not installed in {sys.executable}, so its "
                             f"version is unknown; install the project's environment first. "
                             f"Received: {name}") from None
    os.makedirs(folder, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation",
               "cp", "--dest", folder]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    command += [f"{name}=={version}" for name, version in pins.values()]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"gpu-bundle: pip download failed:\n{done.stdout[-2000:]}"
                         f"{done.stderr[-3000:]}")
    found = []
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        try:
            name, version = wheel_name_version(entry)
        except ValueError:
            continue
        if pins.get(name, (None, None))[1] != version:
            os.remove(path)  # another version of a pinned one, or no longer needed
            continue
        found.append({"file": entry, "name": pins[name][0], "version": version,
                      "bytes": os.path.getsize(path)})
    missing = sorted(set(pins) - {_normal(w["name"]) for w in found})
    if missing:
        raise SystemExit(f"gpu-bundle: no wheel downloaded for {missing}. Received: "
                         f"{sorted(os.listdir(folder))}")
    return found


def _usmtl(*args: str) -> None:
    """Run a usmtl command in this interpreter (the worktree's usmtl on PYTHONPATH)."""
    done = subprocess.run([sys.executable, "-m", "usmtl.cli", *args])
    if done.returncode != 0:
        raise SystemExit(f"gpu-bundle: 'usmtl {' '.join(args)}' failed (status "
                         f"{done.returncode}); see its message above")


def make_pack(manifest: str, config: str, out: str, work: str, overrides=()) -> dict:
    """Make the config's patient split of ``manifest`` and pack its crops with it
    (``usmtl pack --split-file``), so the pack carries the split the runs use.

    Returns ``{"pack", "config", "split": {split: images}}``."""
    from usmtl.config import load_config
    from usmtl.data.prepare import prepare_data
    from usmtl.data.splits import save_split

    os.makedirs(work, exist_ok=True)
    split_path = os.path.join(work, "split.csv")
    data = prepare_data(load_config(config, list(overrides)), manifest, progress=False)
    save_split(data.split, split_path)
    sets = [arg for item in overrides for arg in ("--set", item)]
    _usmtl("pack", manifest, "--config", config, *sets, "--split-file", split_path, "--out", out)
    counts = {k: int((data.row_split == k).sum()) for k in sorted(set(data.row_split))}
    return {"pack": os.path.basename(out), "config": config, "split": counts}


def folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(folder) for f in files)


def tree_bytes(repo: str) -> int:
    """Bytes of the files of ``repo`` that git does not ignore: what travels with it."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=repo, capture_output=True, check=True).stdout.decode()
    paths = [os.path.join(repo, p) for p in listed.split("\0") if p]
    return sum(os.path.getsize(p) for p in paths if os.path.isfile(p))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu-bundle", help="the bundle folder (git-ignored)")
    parser.add_argument("--busbra", default=os.path.join("..", "shared", "data", "BUS-BRA"))
    parser.add_argument("--config", default=os.path.join("configs", "busbra.yaml"),
                        help="crop settings and split of the pack")
    parser.add_argument("--force-pack", action="store_true",
                        help="rebuild the pack even if the bundle has one")
    args = parser.parse_args(argv)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    started = time.time()
    wheels = download_wheels(os.path.join(args.out, "wheels"))
    print(f"gpu-bundle: {len(wheels)} wheels for CPython {PYTHON_VERSION} manylinux x86-64: "
          + ", ".join(f"{w['name']} {w['version']}" for w in wheels), flush=True)
    pack = os.path.join(args.out, PACK_NAME)
    bundle_file = os.path.join(args.out, BUNDLE_FILE)
    previous = {}
    if os.path.isfile(bundle_file):
        with open(bundle_file) as f:
            previous = json.load(f).get("data", {})
    if os.path.isfile(pack) and previous.get("config") == args.config and not args.force_pack:
        data = previous
        print(f"gpu-bundle: {pack} kept (made with {args.config}; --force-pack rebuilds it)")
    else:
        if not os.path.isdir(args.busbra):
            raise SystemExit(f"gpu-bundle: BUS-BRA not found (pass --busbra). Received: "
                             f"{args.busbra}")
        work = os.path.join(repo, "build", "gpu-bundle-work")
        manifest = os.path.join(work, "busbra.csv")
        # Near-duplicate search off: BUS-BRA has patient ids, and the split is by patient.
        _usmtl("import", "busbra", args.busbra, "--out", manifest, "--no-duplicates")
        data = make_pack(manifest, args.config, pack, work)
    bundle, tree = folder_bytes(args.out), tree_bytes(repo)
    if os.path.isfile(bundle_file):
        bundle -= os.path.getsize(bundle_file)
    info = {"made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "python_version": PYTHON_VERSION, "platforms": PLATFORMS, "wheels": wheels,
            "data": data, "bundle_bytes": bundle, "tree_bytes": tree}
    with open(bundle_file, "w") as f:
        json.dump(info, f, indent=2)
    total = bundle + tree + os.path.getsize(bundle_file)
    print(f"gpu-bundle: bundle {bundle / 2**20:.1f} MiB ({args.out}), working tree "
          f"{tree / 2**20:.1f} MiB, together {total / 2**20:.1f} MiB of the 64 MiB that "
          f"travel ({time.time() - started:.0f} s)")
    if total >= LIMIT_BYTES:
        raise SystemExit(f"gpu-bundle: {total / 2**20:.1f} MiB is over the 64 MiB limit; "
                         f"pack lossy (usmtl pack --codec webp --quality 95). Received: "
                         f"{total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
