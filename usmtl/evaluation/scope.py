"""What an evaluation scored, said in its output: which rows, which split, which scores.

``evaluate``, ``compare``, ``validate`` and ``report`` read predictions that may be a subset
of a file (``--split``), come from another manifest (``--manifest``), or hold recalibrated
scores (``usmtl calibrate``). None of these is silent:

- :func:`select_split`: ``evaluate PRED.csv --split test`` keeps the rows whose ``split`` is
  ``test``, or refuses a file that has no ``split`` column.
- :func:`scope_note`: how many rows and patients were scored, from what.
- :func:`check_other_manifest`: ``evaluate RUN --manifest other.csv`` scores the rows of
  ``other.csv`` whose patients are in the run's split; when those rows are not the run's own
  images (patient ids that only coincide), it refuses, naming the counts.
- :func:`calibration_state` and :func:`scores_note`: per task, calibrated or raw.
- :func:`hierarchy_on_one_scale`: the hierarchy checks compare a parent and a child on the
  same scale: where only one of the two was recalibrated, both raw scores are used, and a
  note says so.

Example:
    >>> import pandas as pd
    >>> from usmtl.evaluation.scope import calibration_state
    >>> calibration_state(pd.DataFrame({"p_a": [0.5], "raw_a": [0.4], "p_b": [0.2]}))
    {'a': 'calibrated', 'b': 'raw'}
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from usmtl.errors import UsmtlError
from usmtl.evaluation.predictions import prediction_tasks


def select_split(frame: pd.DataFrame, split: str | None, source: str) -> pd.DataFrame:
    """The rows of ``frame`` in ``split`` (all of them when ``split`` is None).

    Raises:
        UsmtlError: ``split`` given and the file has no ``split`` column, or no row in it;
            names the file, the column and what it holds.
    """
    if split is None:
        return frame
    if "split" not in frame.columns:
        raise UsmtlError(f"{source} has no 'split' column, so --split {split} cannot be "
                         f"honoured: drop --split to score all {len(frame)} rows, or evaluate "
                         f"a file of that split alone. Received columns: {list(frame.columns)}")
    values = frame["split"].astype(str).str.strip()
    keep = values == split
    if not keep.any():
        counts = values.value_counts().to_dict()
        raise UsmtlError(f"No row of {source} is in split {split!r} (column 'split'). "
                         f"Received: {counts}")
    return frame[keep.to_numpy()].reset_index(drop=True)


def scope_note(frame: pd.DataFrame, source: str, split: str | None, total: int | None = None) -> str:
    """``Scored 24 rows (24 images of 12 patients) of X, split test (24 of 120 rows)``."""
    n = len(frame)
    patients = frame["patient_id"].astype(str).nunique() if "patient_id" in frame else None
    who = f" of {patients} patients" if patients is not None else ""
    text = f"Scored {n} rows ({frame['image'].nunique() if 'image' in frame else n} images{who}) of {source}"
    if split is not None:
        text += f", split {split}"
        if total is not None:
            text += f" ({n} of its {total} rows)"
    else:
        text += " (every row; --split keeps one split)"
    return text


def check_other_manifest(run_dir: str, manifest: str, split: str) -> str:
    """Check that ``evaluate RUN --manifest other.csv --split S`` scores what it says: the
    rows of ``other.csv`` whose patients the run's split puts in ``S`` must be images of
    those patients in the run's own manifest (the same cohort, relabelled or with more
    columns); returns a note naming the counts.

    Raises:
        UsmtlError: rows of ``S`` whose images the run's manifest does not list for that
            split (patient ids that only coincide with the run's), naming the counts and
            ``usmtl validate`` to score every row of an external manifest.
    """
    from usmtl.data.manifest import read_manifest
    from usmtl.data.splits import load_split
    from usmtl.run import Run

    run = Run.open(run_dir)
    if os.path.abspath(manifest) == os.path.abspath(run.manifest_path):
        return ""
    split_of = load_split(run.split_path)
    other = read_manifest(manifest)
    pids = other.patient_ids()
    in_split = np.array([split_of.get(p) == split for p in pids])
    unknown = int(sum(p not in split_of for p in pids))
    own = read_manifest(run.manifest_path)
    own_rows = np.array([split_of.get(p) == split for p in own.patient_ids()])
    own_images = {os.path.abspath(p) for p, keep in zip(own.image_paths(), own_rows) if keep}
    chosen = [os.path.abspath(p) for p, keep in zip(other.image_paths(), in_split) if keep]
    foreign = sum(p not in own_images for p in chosen)
    counts = (f"{len(chosen)} of its {len(other)} rows have a patient id in the run's {split} "
              f"split, {unknown} are of patients the run's split does not know")
    if foreign:
        raise UsmtlError(f"{manifest}: {counts}; {foreign} of those {len(chosen)} rows are images "
                         f"that the run's manifest ({run.manifest_path}) does not list for its "
                         f"{split} split, so the patient ids only coincide: scoring them as the "
                         f"run's {split} split would be wrong. To score every row of an external "
                         f"manifest: usmtl validate {run_dir} {manifest} --out DIR (or usmtl "
                         f"predict, then usmtl evaluate on the CSV). Received: {foreign} foreign "
                         f"image(s), e.g. {[p for p in chosen if p not in own_images][:2]}")
    return f"{manifest}: {counts}; the {len(chosen)} scored are the run's own {split} images"


def require_model(run, cache: str, stale: str) -> None:
    """Refuse a stale cached prediction file of a run that holds no model to predict again
    with (a radiomics run keeps its predictions only).

    Raises:
        UsmtlError: naming the cache, why it is stale and what to do.
    """
    if not os.path.isfile(run.best_model):
        raise UsmtlError(f"{cache} cannot be reused ({stale}) and {run.path} holds no "
                         f"checkpoints/best.keras to predict again with: fit it again on the "
                         f"manifest as it is now (a radiomics run: usmtl radiomics fit). "
                         f"Received: {run.manifest_path}")


def calibration_state(frame: pd.DataFrame) -> dict[str, str]:
    """``{task: "calibrated" | "raw"}``: a calibrated task's raw score is kept as ``raw_<task>``
    (:func:`usmtl.evaluation.recalibrate.apply_calibration`, ``usmtl predict``)."""
    return {t: "calibrated" if f"raw_{t}" in frame.columns else "raw"
            for t in prediction_tasks(frame)}


def scores_note(frame: pd.DataFrame, calibration: dict | None = None) -> str:
    """``Scores: calibrated (platt ...) for a, b; raw for c``: what the metrics are of."""
    state = calibration_state(frame)
    calibrated = [t for t, s in state.items() if s == "calibrated"]
    raw = [t for t, s in state.items() if s == "raw"]
    if not calibrated:
        return "Scores: raw (the heads' own; no recalibration applied)"
    how = ""
    if calibration:
        how = f" ({calibration.get('method')}, fitted on the {calibration.get('fitted_on')} split)"
    text = f"Scores: calibrated{how} for {', '.join(calibrated)}"
    return text + (f"; raw for {', '.join(raw)}" if raw else "")


def mixed_edges(frame: pd.DataFrame, edges) -> list[tuple[str, str]]:
    """The ``(parent, child)`` edges where one task is calibrated and the other raw."""
    state = calibration_state(frame)
    return [(p, c) for p, c in _pairs(edges) if p in state and c in state and state[p] != state[c]]


def _pairs(edges) -> list[tuple[str, str]]:
    return [tuple(s.strip() for s in (e.split(">") if isinstance(e, str) else e)) for e in edges]


def one_scale_frame(frame: pd.DataFrame, parent: str, child: str) -> pd.DataFrame:
    """``p_<parent>`` and ``p_<child>`` on one scale: both raw where one is calibrated."""
    mixed = (f"raw_{parent}" in frame) != (f"raw_{child}" in frame)
    pick = (lambda t: f"raw_{t}" if f"raw_{t}" in frame else f"p_{t}") if mixed else (lambda t: f"p_{t}")
    return pd.DataFrame({f"p_{parent}": frame[pick(parent)].to_numpy(float),
                         f"p_{child}": frame[pick(child)].to_numpy(float)})


def hierarchy_on_one_scale(frame: pd.DataFrame, edges, threshold: float = 0.5):
    """``(rates, notes)``: :func:`usmtl.evaluation.stats.hierarchy_inconsistency` per edge,
    on the raw scores of both tasks where only one was recalibrated (a calibrated parent
    against a raw child measures the calibration, not the model), with a note per edge."""
    from usmtl.evaluation import stats

    rates, notes = {}, []
    for parent, child in _pairs(edges):
        if f"p_{parent}" not in frame or f"p_{child}" not in frame:
            rates.update(stats.hierarchy_inconsistency(frame, [(parent, child)], threshold))
            continue
        rates.update(stats.hierarchy_inconsistency(one_scale_frame(frame, parent, child),
                                                   [(parent, child)], threshold))
        if (parent, child) in mixed_edges(frame, [(parent, child)]):
            notes.append(f"Hierarchy {parent}>{child}: only "
                         f"{parent if f'raw_{parent}' in frame else child} is calibrated, so this "
                         f"edge's inconsistency is computed on the raw scores of both")
    return rates, notes
