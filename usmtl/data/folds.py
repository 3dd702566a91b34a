"""Patient-level folds for cross-validation (``usmtl experiment --folds / --cv``).

A fold table maps each patient to a fold name. It comes from a manifest column (BUS-BRA's
official ``kFold``, imported as ``fold`` by ``usmtl import busbra``), from a CSV file
(``patient_id,fold`` or ``image,fold``), or is drawn: ``k`` folds, seeded, stratified by a
label over patients. Fold ``f``'s split tests on the patients of ``f`` and trains on the
others, less a stratified validation share for checkpoint selection, so every image is tested
exactly once over the folds.

Example:
    >>> import numpy as np
    >>> from usmtl.data.folds import make_folds, fold_split
    >>> folds = make_folds(np.array(["a", "b", "c", "d"]), np.array([1.0, 0.0, 1.0, 0.0]), k=2)
    >>> sorted(set(folds.values()))
    ['1', '2']
    >>> split = fold_split(folds, "1", {}, val_fraction=0.0)
    >>> sorted(p for p, s in split.items() if s == "test") == sorted(p for p, f in folds.items() if f == "1")
    True
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from usmtl.data.splits import make_split, patient_strata
from usmtl.errors import ManifestError, UsmtlError

FOLDS_FILE = "folds.csv"


def fold_order(names) -> list[str]:
    """Fold names in natural order: numbers by value ('2' before '10'), then text."""
    names = sorted(set(names))
    return sorted(names, key=lambda n: (0, float(n), n) if _is_number(n) else (1, 0.0, n))


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _clean(value) -> str:
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
    return text[:-2] if text.endswith(".0") and _is_number(text) else text  # 3.0 read as float


def _check_folds(folds: dict[str, str], source: str) -> dict[str, str]:
    names = fold_order(folds.values())
    if len(names) < 2:
        raise UsmtlError(f"{source}: cross-validation needs at least 2 folds. "
                         f"Received: {names}")
    return folds


def folds_from_rows(patient_ids, values, where, source: str) -> dict[str, str]:
    """``{patient: fold}`` from one fold value per row; ``where(i)`` names row ``i`` in errors.

    Raises:
        ManifestError: a row without a fold, or a patient whose rows name different folds
            (a patient on both sides of a fold would leak), each problem by row.
    """
    folds: dict[str, str] = {}
    problems = []
    for i, (pid, value) in enumerate(zip(patient_ids, values)):
        fold = _clean(value)
        if not fold:
            problems.append(f"{where(i)}: no fold")
        elif folds.setdefault(pid, fold) != fold:
            problems.append(f"{where(i)}: patient {pid!r} is in fold {fold!r} here and "
                            f"{folds[pid]!r} on an earlier row")
    if problems:
        raise ManifestError(f"{source}: every row needs one fold per patient", problems[:20])
    return _check_folds(folds, source)


def folds_from_file(path: str, manifest) -> dict[str, str]:
    """``{patient: fold}`` from a CSV with columns ``patient_id,fold`` or ``image,fold``
    (images as the manifest names them); every patient of ``manifest`` must be in it."""
    if not os.path.isfile(path):
        raise UsmtlError(f"Folds file not found. Received: {path}")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "fold" not in frame.columns or not {"patient_id", "image"} & set(frame.columns):
        raise ManifestError(f"{path}: a folds file has columns patient_id,fold or image,fold. "
                            f"Received: {list(frame.columns)}")
    key = "patient_id" if "patient_id" in frame.columns else "image"
    known = folds_from_rows(frame[key].astype(str).str.strip(), frame["fold"],
                            lambda i: f"{os.path.basename(path)} line {i + 2}", path)
    own = manifest.patient_ids() if key == "patient_id" else manifest.frame["image"].astype(str).str.strip()
    missing = [manifest.where(i) for i, k in enumerate(own) if k not in known]
    if missing:
        raise ManifestError(f"{path} has no fold for {len(missing)} row(s) of {manifest.path}",
                            missing[:20])
    return folds_from_rows(manifest.patient_ids(), [known[k] for k in own], manifest.where, path)


def make_folds(patient_ids, labels, k: int, seed: int = 0) -> dict[str, str]:
    """``k`` patient-level folds ('1'..'k'), stratified by ``labels`` (per patient: positive
    if any image is), each stratum shuffled with ``seed`` and dealt round-robin."""
    if not isinstance(k, (int, np.integer)) or k < 2:
        raise UsmtlError(f"--cv needs k >= 2 folds. Received: {k!r}")
    strata = patient_strata(np.asarray(patient_ids).astype(str), np.asarray(labels, float))
    if len(strata) < k:
        raise UsmtlError(f"--cv {k} needs at least {k} patients. Received: {len(strata)}")
    rng = np.random.default_rng(seed)
    folds, dealt = {}, 0
    for stratum in sorted(set(strata.values())):
        patients = np.array(sorted(p for p, s in strata.items() if s == stratum))
        rng.shuffle(patients)
        for pid in patients:  # continue the deal across strata so fold sizes differ by <= 1
            folds[pid] = str(dealt % k + 1)
            dealt += 1
    return folds


def resolve_folds(manifest, folds: str | None, cv: int | None, labels, seed: int) -> dict[str, str]:
    """The fold table of ``--folds`` (a manifest column or a CSV file) or ``--cv k``."""
    if (folds is None) == (cv is None):
        raise UsmtlError(f"Give one of --folds (a manifest column or a CSV file) or --cv K. "
                         f"Received: folds={folds!r}, cv={cv!r}")
    if cv is not None:
        return make_folds(manifest.patient_ids(), labels, cv, seed)
    if manifest.has_column(folds):
        return folds_from_rows(manifest.patient_ids(), manifest.frame[folds], manifest.where,
                               f"{manifest.path} column {folds!r}")
    if os.path.isfile(folds):
        return folds_from_file(folds, manifest)
    raise UsmtlError(f"--folds names neither a column of {manifest.path} nor a file. "
                     f"Received: {folds!r} (columns: {list(manifest.frame.columns)})")


def fold_split(folds: dict[str, str], fold: str, strata: dict[str, float],
               val_fraction: float, seed: int = 0) -> dict[str, str]:
    """The split of fold ``fold``: its patients test; of the others, ``val_fraction`` go to
    validation (stratified by ``strata``, a per-patient label, seeded) and the rest train."""
    if fold not in set(folds.values()):
        raise UsmtlError(f"No fold {fold!r}. Received folds: {fold_order(folds.values())}")
    rest = sorted(p for p, f in folds.items() if f != fold)
    inner = make_split(rest, [strata.get(p, np.nan) for p in rest], test_fraction=0.0,
                       val_fraction=val_fraction, seed=seed)
    return {p: ("test" if f == fold else inner[p]) for p, f in folds.items()}


def save_folds(folds: dict[str, str], path: str) -> None:
    from usmtl.atomic import write_csv_atomic

    write_csv_atomic(path, pd.DataFrame(sorted(folds.items()), columns=["patient_id", "fold"]))


def load_folds(path: str) -> dict[str, str]:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return dict(zip(frame["patient_id"], frame["fold"]))
