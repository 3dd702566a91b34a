"""The radiomics model: Boruta feature selection and a random forest per task.

As in the radiomics arm of Li, Guo et al. (Front. Physiol. 2022, after Sun et al. 2020):
for each task, Boruta (Kursa & Rudnicki, J. Stat. Softw. 2010; the ``boruta`` package)
selects features on the training patients only, then a random forest with maximum depth
300 (scikit-learn) is fitted on them. Validation and test images are predicted and written
in the same prediction-file format as a CNN run, into a folder that ``usmtl evaluate`` and
``usmtl compare`` read like a run directory::

    config.yaml  split.csv  run.json  radiomics.json  selected_features.csv
    val_predictions.csv  test_predictions.csv  predictions.csv (every split)  models.joblib

Selection: Boruta's confirmed features; if it confirms none, the tentative ones too; if
still none, the ``fallback_k`` best-ranked (reported as ``fallback`` in radiomics.json,
because a model on unconfirmed features deserves suspicion).

Example:
    >>> from usmtl.radiomics.model import fit_radiomics
    >>> result = fit_radiomics("demo/features.csv", "runs/radiomics",
    ...                        split_file="runs/quickstart")  # doctest: +SKIP
    >>> result["tasks"]["malignancy"]["selected"][:2]  # doctest: +SKIP
    ['original_firstorder_Mean', 'original_glcm_Contrast']
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pandas as pd

from usmtl.errors import UsmtlError


@dataclasses.dataclass
class RadiomicsModelSettings:
    """Boruta and random-forest settings (the paper: random forest of maximum depth 300)."""

    seed: int = 0
    boruta_iterations: int = 100
    boruta_depth: int = 5  # depth of the forests Boruta ranks features with (its authors' advice)
    trees: int = 500
    max_depth: int = 300
    fallback_k: int = 5
    jobs: int = 1


def require_boruta():
    try:
        from boruta import BorutaPy
    except ImportError as exc:
        raise UsmtlError(f"The boruta package is not installed: pip install boruta "
                         f"(or pip install 'usmtl[radiomics]'). Received: {exc}") from None
    return BorutaPy


def select_features(x: np.ndarray, y: np.ndarray, settings: RadiomicsModelSettings) -> dict:
    """Boruta on ``(x, y)``: ``{"selected": column indices, "status": confirmed|tentative|
    fallback, "ranking": Boruta ranks}``."""
    from sklearn.ensemble import RandomForestClassifier

    BorutaPy = require_boruta()
    forest = RandomForestClassifier(max_depth=settings.boruta_depth, class_weight="balanced",
                                    n_jobs=settings.jobs, random_state=settings.seed)
    boruta = BorutaPy(forest, n_estimators="auto", max_iter=settings.boruta_iterations,
                      random_state=settings.seed, verbose=0)
    boruta.fit(np.asarray(x, float), np.asarray(y, int))
    ranking = np.asarray(boruta.ranking_)
    selected, status = np.flatnonzero(boruta.support_), "confirmed"
    if len(selected) == 0:
        selected, status = np.flatnonzero(boruta.support_ | boruta.support_weak_), "tentative"
    if len(selected) == 0:
        selected, status = np.argsort(ranking, kind="stable")[:settings.fallback_k], "fallback"
    return {"selected": [int(i) for i in selected], "status": status, "ranking": ranking}


def _task_rows(labels, train, usable) -> tuple[np.ndarray, str | None]:
    """Training rows of one task, and why it cannot be fitted (None if it can)."""
    rows = np.flatnonzero(train & usable & ~np.isnan(labels))
    classes = np.unique(labels[rows])
    if len(classes) < 2:
        have = "no label" if len(classes) == 0 else f"only class {int(classes[0])}"
        return rows, (f"its {len(rows)} training images with features have {have}; "
                      f"Boruta and the forest need both classes")
    return rows, None


def fit_radiomics(features_path: str, out_dir: str, cfg=None, split_file: str | None = None,
                  manifest_path: str | None = None,
                  settings: RadiomicsModelSettings | None = None) -> dict:
    """Select features and fit one forest per task on the training split; predict the rest.

    Args:
        features_path: the CSV of ``usmtl radiomics extract``.
        out_dir: the folder to write (must not exist or be empty).
        cfg: the :class:`~usmtl.config.ExperimentConfig` whose tasks (labels, hierarchy) and
            split settings are used; default: the config of ``split_file`` when that is a run.
        split_file: a CNN run directory or a split CSV, so both models see the same patients.
            Without it the split is made from ``cfg`` exactly as ``usmtl fit`` would.
        manifest_path: default: the manifest the features were extracted from.
    """
    from usmtl.run import Run

    settings = settings or RadiomicsModelSettings()
    inputs = _build_inputs(features_path, out_dir, cfg, split_file, manifest_path)
    task_rows, skipped_tasks = _fittable_tasks(inputs, features_path)
    run = Run.create(out_dir, inputs.cfg, inputs.data.manifest.path, inputs.data.split,
                     resumable=False, kind="radiomics")
    fitted = {name: _fit_task(inputs, name, rows, settings) for name, rows in task_rows.items()}
    return _write_outputs(run, inputs, fitted, skipped_tasks, settings, features_path)


# ---------------------------------------------------------------------------------------
# The phases of fit_radiomics: inputs, tasks, one forest per task, outputs
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Inputs:
    cfg: object          # the ExperimentConfig
    data: object         # usmtl.data.prepare.PreparedData
    names: list          # feature columns
    x: np.ndarray        # (manifest rows, features); NaN where a row has no features
    usable: np.ndarray   # rows with every feature finite


@dataclasses.dataclass
class _FittedTask:
    model: dict          # {"features": [...], "forest": RandomForestClassifier}
    probs: np.ndarray    # per manifest row; NaN where not usable
    selection: list      # rows of selected_features.csv
    summary: dict        # the task's entry in radiomics.json


def _build_inputs(features_path, out_dir, cfg, split_file, manifest_path) -> _Inputs:
    """Features, config and the split's data, checked before anything is written."""
    from usmtl.data.prepare import prepare_data
    from usmtl.radiomics.extract import feature_columns, read_features
    from usmtl.run import Run

    features, meta = read_features(features_path)
    manifest_path = manifest_path or meta.get("manifest")
    if not manifest_path:
        raise UsmtlError(f"{features_path}: no sidecar names its manifest; pass --manifest")
    if cfg is None:
        source = Run(split_file) if split_file and os.path.isdir(split_file) else None
        if source is None or not os.path.isfile(source.config_path):
            raise UsmtlError("fit_radiomics needs a config (its tasks) or a run directory as "
                             f"split_file. Received: split_file={split_file!r}")
        cfg = source.config()
    Run(out_dir).require_empty(resumable=False)
    data = prepare_data(cfg, manifest_path, split_file)
    names = feature_columns(features)
    x = _feature_matrix(features, names, data.manifest, features_path, manifest_path)
    return _Inputs(cfg, data, names, x, np.isfinite(x).all(axis=1))


def _feature_matrix(features, names, manifest, features_path, manifest_path) -> np.ndarray:
    """The features in manifest row order; raises when the file is of another manifest."""
    n = len(manifest)
    rows = features["row"].to_numpy(int)
    bad = [int(r) for r in rows if not 0 <= r < n]
    if bad:
        raise UsmtlError(f"{features_path}: rows {bad[:5]} are beyond the {n} rows of {manifest_path}; "
                         f"was it extracted from another manifest?")
    expected = manifest.frame["image"].to_numpy()[rows]
    mismatch = np.flatnonzero(expected != features["image"].to_numpy())
    if len(mismatch):
        i = mismatch[0]
        raise UsmtlError(f"{features_path} does not match {manifest_path}: feature row {i + 2} is "
                         f"image {features['image'].iat[i]!r}, manifest line {rows[i] + 2} is "
                         f"{expected[i]!r}; extract the features again")
    x = np.full((n, len(names)), np.nan)
    x[rows] = features[names].to_numpy(float)
    return x


def _fittable_tasks(inputs: _Inputs, features_path: str) -> tuple[dict, dict]:
    """``({task: training rows}, {task: why it cannot be fitted})``; raises if none can."""
    train = inputs.data.row_split == "train"
    task_rows, skipped_tasks = {}, {}
    for name in inputs.data.graph.names:
        rows_of_task, why = _task_rows(inputs.data.labels[name], train, inputs.usable)
        if why:
            skipped_tasks[name] = why
        else:
            task_rows[name] = rows_of_task
    if not task_rows:
        raise UsmtlError(f"No task can be fitted: {skipped_tasks}. Received: {features_path}")
    return task_rows, skipped_tasks


def _fit_task(inputs: _Inputs, name: str, fit_rows: np.ndarray,
              settings: RadiomicsModelSettings) -> _FittedTask:
    """Boruta on the task's training rows, then a forest on the selected features."""
    from sklearn.ensemble import RandomForestClassifier

    x, y, names, usable = inputs.x, inputs.data.labels[name], inputs.names, inputs.usable
    chosen = select_features(x[fit_rows], y[fit_rows], settings)
    columns = chosen["selected"]
    forest = RandomForestClassifier(n_estimators=settings.trees, max_depth=settings.max_depth,
                                    n_jobs=settings.jobs, random_state=settings.seed)
    forest.fit(x[fit_rows][:, columns], y[fit_rows].astype(int))
    p = np.full(len(y), np.nan)
    p[usable] = forest.predict_proba(x[usable][:, columns])[:, 1]
    importance = dict(zip(columns, forest.feature_importances_))
    selection = [{"task": name, "feature": names[c], "boruta_rank": int(chosen["ranking"][c]),
                  "forest_importance": float(importance[c])} for c in columns]
    selected = [names[c] for c in columns]
    return _FittedTask({"features": selected, "forest": forest}, p, selection,
                       {"train_images": int(len(fit_rows)), "boruta": chosen["status"],
                        "selected": selected})


def _write_outputs(run, inputs: _Inputs, fitted: dict, skipped_tasks: dict,
                   settings: RadiomicsModelSettings, features_path: str) -> dict:
    """Predictions (every split, val, test), selection, models, radiomics.json; then the run
    is finished, so that 'usmtl evaluate' and 'usmtl compare' read this folder like a CNN
    run (they use the cached <split>_predictions.csv)."""
    import joblib

    from usmtl.evaluation.metrics import binary_metrics
    from usmtl.evaluation.predictions import predictions_frame
    from usmtl.run import write_csv_atomic

    data, usable, manifest = inputs.data, inputs.usable, inputs.data.manifest
    probs = {name: task.probs for name, task in fitted.items()}
    summary = {name: task.summary for name, task in fitted.items()}
    frame = predictions_frame(manifest.frame["image"].to_numpy()[usable], manifest.patient_ids()[usable],
                              data.row_split[usable], {k: v[usable] for k, v in probs.items()},
                              {k: data.labels[k][usable] for k in probs},
                              [e for e in data.graph.edges if e[0] in probs and e[1] in probs])
    write_csv_atomic(run.file("predictions.csv"), frame)
    for split in ("val", "test"):
        part = frame[frame["split"] == split]
        write_csv_atomic(run.predictions_path(split), part)
        for name in probs:
            summary[name][f"{split}_metrics"] = binary_metrics(
                part[f"y_{name}"].to_numpy(float), part[f"p_{name}"].to_numpy(float))
    write_csv_atomic(run.file("selected_features.csv"),
                     pd.DataFrame([row for task in fitted.values() for row in task.selection]))
    joblib.dump({name: task.model for name, task in fitted.items()}, run.file("models.joblib"))
    skipped = [manifest.where(i) for i in np.flatnonzero(~usable)]
    result = {"features": os.path.abspath(features_path), "n_features": len(inputs.names),
              "settings": dataclasses.asdict(settings), "skipped_rows": skipped,
              "skipped_tasks": skipped_tasks, "tasks": summary}
    run.write_json("radiomics.json", result)
    run.mark_finished()
    result["out_dir"] = run.path
    return result


def predict_radiomics(fit_dir: str, features_path: str) -> pd.DataFrame:
    """Probabilities of a fitted radiomics model (the folder of :func:`fit_radiomics`) for
    the images of a feature file of ``usmtl radiomics extract``, in the CNN's prediction
    format (``split`` from the fit's ``split.csv`` for known patients, else empty; labels are
    not read: evaluate with ``usmtl evaluate`` on a manifest's predictions instead).

    Extract the new images with the settings of the fit's features (the command checks the
    sidecars when both are present). Rows with a non-finite feature get no probability.

    Example:
        >>> frame = predict_radiomics("runs/radiomics", "new_features.csv")  # doctest: +SKIP
        >>> frame[["image", "p_malignancy"]].head()  # doctest: +SKIP
    """
    import joblib

    from usmtl.evaluation.predictions import predictions_frame
    from usmtl.radiomics.extract import read_features
    from usmtl.run import Run
    from usmtl.tasks import TaskGraph

    run = Run(fit_dir)
    models_file = run.file("models.joblib")
    if not os.path.isfile(models_file):
        raise UsmtlError(f"{fit_dir}: no models.joblib; is it a folder of 'usmtl radiomics fit'? "
                         f"Received: {fit_dir}")
    models = joblib.load(models_file)
    features, meta = read_features(features_path)
    fitted = run.read_json("radiomics.json")
    _check_same_extraction(fitted.get("features"), meta, features_path)
    missing = sorted({c for m in models.values() for c in m["features"]} - set(features.columns))
    if missing:
        raise UsmtlError(f"{features_path} lacks features the model uses: {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}. Received: {features_path}")
    used = sorted({c for m in models.values() for c in m["features"]})
    usable = np.isfinite(features[used].to_numpy(float)).all(axis=1) if used else \
        np.ones(len(features), bool)
    part = features[usable]
    probs = {name: model["forest"].predict_proba(part[model["features"]].to_numpy(float))[:, 1]
             for name, model in models.items()}
    known = run.split() if os.path.isfile(run.split_path) else {}
    patients = part["patient_id"].astype(str).to_numpy()
    splits = np.array([known.get(p, "") for p in patients], dtype=object)
    edges = TaskGraph.from_config(run.config().tasks).edges
    return predictions_frame(part["image"].to_numpy(), patients, splits, probs, None,
                             [e for e in edges if e[0] in probs and e[1] in probs])


def _check_same_extraction(fitted_features: str | None, meta: dict, features_path: str) -> None:
    """The new features must come from the extraction settings the model was fitted on."""
    from usmtl.radiomics.extract import read_features

    if not fitted_features or not os.path.isfile(fitted_features) or "settings" not in meta:
        return  # nothing to compare with (the fit's feature file moved, or no sidecar)
    fitted_meta = read_features(fitted_features)[1]
    if "settings" in fitted_meta and fitted_meta["settings"] != meta["settings"]:
        raise UsmtlError(f"{features_path} was extracted with other settings than the model's "
                         f"features ({fitted_features}); extract again with the same ones. "
                         f"Received: {meta['settings']}, model: {fitted_meta['settings']}")
