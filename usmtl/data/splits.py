"""Patient-level, stratified splits.

The unit of splitting is the patient, never the image: images of one patient (two views
of one lesion, as in BUS-BRA) are correlated, and putting them on both sides of a split
inflates every metric. A split is a ``patient_id -> train|val|test`` table, so a patient
cannot be in two splits by construction.

Example:
    >>> import numpy as np
    >>> from usmtl.data.splits import make_split
    >>> split = make_split(np.array(["a", "a", "b", "c"]), np.array([1.0, 1.0, 0.0, 1.0]),
    ...                    test_fraction=0.3, val_fraction=0.0, seed=0)
    >>> sorted(split)
    ['a', 'b', 'c']
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from usmtl.errors import ManifestError

SPLIT_FILE = "split.csv"


def patient_strata(patient_ids: np.ndarray, labels: np.ndarray) -> dict[str, int]:
    """Per patient: 1 if any image is positive, 0 if all known images are negative, -1 if
    none is known. Unknown patients form their own stratum rather than being guessed."""
    strata: dict[str, int] = {}
    for pid, label in zip(patient_ids, labels):
        current = strata.get(pid, -1)
        if not np.isnan(label):
            current = max(current, int(label))
        strata[pid] = current
    return strata


def make_split(patient_ids, labels, test_fraction: float = 0.3, val_fraction: float = 0.15,
               seed: int = 0) -> dict[str, str]:
    """Assign each patient to train, val or test, stratified by ``labels``.

    Within each stratum the patients are shuffled with ``seed`` and the first
    ``round(test_fraction * n)`` go to test, the next ``round(val_fraction * n)`` to
    validation (both fractions are of all patients), the rest to training.
    """
    patient_ids = np.asarray(patient_ids).astype(str)
    labels = np.asarray(labels, float)
    strata = patient_strata(patient_ids, labels)
    rng = np.random.default_rng(seed)
    split: dict[str, str] = {}
    for stratum in sorted(set(strata.values())):
        patients = np.array(sorted(p for p, s in strata.items() if s == stratum))
        rng.shuffle(patients)
        n_test = int(round(test_fraction * len(patients)))
        n_val = int(round(val_fraction * len(patients)))
        for k, pid in enumerate(patients):
            split[pid] = "test" if k < n_test else "val" if k < n_test + n_val else "train"
    return split


def split_from_manifest(manifest) -> dict[str, str] | None:
    """The manifest's own ``split`` column as a patient table, or None if it has none."""
    if not manifest.has_column("split"):
        return None
    values = manifest.frame["split"].astype(str).str.strip()
    if (values == "").all():
        return None
    missing = [manifest.where(i) for i in np.flatnonzero(values.to_numpy() == "")]
    if missing:
        raise ManifestError("The 'split' column is filled for some rows but not all; fill it "
                            "everywhere or leave it empty everywhere", missing[:20])
    split: dict[str, str] = {}
    problems = []
    for pid, value in zip(manifest.patient_ids(), values):
        if split.setdefault(pid, value) != value:
            problems.append(f"patient {pid!r} is in both {split[pid]!r} and {value!r}")
    if problems:
        raise ManifestError(f"{manifest.path}: patients in several splits", sorted(set(problems)))
    return split


def save_split(split: dict[str, str], path: str) -> None:
    frame = pd.DataFrame(sorted(split.items()), columns=["patient_id", "split"])
    tmp = path + ".tmp"
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def load_split(path: str) -> dict[str, str]:
    """Read a split file (``patient_id,split``); a run directory means its split.csv."""
    if os.path.isdir(path):
        path = os.path.join(path, SPLIT_FILE)
    if not os.path.isfile(path):
        raise ManifestError(f"Split file not found. Received: {path}")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(frame.columns[:2]) != ["patient_id", "split"]:
        raise ManifestError(f"{path}: a split file has columns patient_id,split. "
                            f"Received: {list(frame.columns)}")
    bad = frame[~frame["split"].isin(["train", "val", "test"])]
    if len(bad):
        raise ManifestError(f"{path}: split must be train, val or test",
                            [f"line {i + 2}: {v!r}" for i, v in zip(bad.index, bad["split"])][:20])
    dupes = frame[frame["patient_id"].duplicated(keep=False)]
    if len(dupes):
        raise ManifestError(f"{path}: a patient appears on several lines",
                            sorted(set(dupes["patient_id"]))[:20])
    return dict(zip(frame["patient_id"], frame["split"]))


def rows_in_split(manifest, split: dict[str, str]) -> np.ndarray:
    """The split name of every manifest row; every patient must be in ``split``."""
    pids = manifest.patient_ids()
    missing = sorted({p for p in pids if p not in split})
    if missing:
        raise ManifestError(f"{len(missing)} patient(s) of {manifest.path} are not in the split",
                            [repr(p) for p in missing[:20]])
    return np.array([split[p] for p in pids])


def select_split_rows(manifest, split_file: str | None, split: str | None, source: str,
                      model: str = ""):
    """``(manifest, splits)``: each row's split name from a run's ``split_file`` ("" without
    one), keeping only the rows of ``split`` when given. ``source`` (the manifest path) and
    ``model`` (the run or export) are named in errors."""
    from usmtl.errors import UsmtlError

    known = load_split(split_file) if split_file and os.path.isfile(split_file) else None
    splits = np.array([""] * len(manifest), dtype=object)
    if known is not None:
        splits = np.array([known.get(p, "") for p in manifest.patient_ids()], dtype=object)
    if split is not None:
        if known is None:
            raise UsmtlError(f"--split needs the run's {SPLIT_FILE} (an export uses its source "
                             f"run's), found none. Received: {split_file or model}")
        rows_in_split(manifest, known)  # every patient must be known
        keep = splits == split
        manifest, splits = manifest.subset(keep), splits[keep]
        if len(manifest) == 0:
            raise UsmtlError(f"No rows of {source} are in split {split!r}")
    return manifest, splits
