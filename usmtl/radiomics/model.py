"""The radiomics model: Boruta feature selection and a random forest per task.

As in the radiomics arm of Li, Guo et al. (Front. Physiol. 2022, after Sun et al. 2020):
for each task, Boruta (Kursa & Rudnicki, J. Stat. Softw. 2010; the ``boruta`` package)
selects features on the training patients only, then a random forest with maximum depth
300 (scikit-learn) is fitted on them. Validation and test images are predicted and written
in the same prediction-file format as a CNN run, into a folder that ``usmtl evaluate`` and
``usmtl compare`` read like a run directory::

    config.yaml  split.csv  run.json  radiomics.json  selected_features.csv
    val_predictions.csv  test_predictions.csv  predictions.csv (every split)  models.skops

The forests are saved with ``skops.io``, never pickled: a fit folder is often handed on, and
unpickling a file runs whatever code it names. :func:`predict_radiomics` first checks the
folder's JSON and YAML side files, then refuses a ``models.skops`` that holds any type outside
:data:`ALLOWED_TYPES` (those of a random forest: no function, no other class), naming the
types. A ``models.joblib`` of an older ``usmtl`` is never loaded: the error says how to fit
again (``usmtl radiomics fit FEATURES --split-file FIT_DIR --out NEW_DIR`` reuses the fit's
split and config).

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

MODELS_FILE = "models.skops"
LEGACY_MODELS_FILE = "models.joblib"  # a pickle of usmtl before skops: never loaded
RADIOMICS_FILE = "radiomics.json"

# Every type a models.skops of fit_radiomics may name: a dict of tasks, each
# {"features": [str], "forest": RandomForestClassifier}, and what a fitted forest holds.
# skops.io trusts some types by default (any scikit-learn estimator among them); this list is
# checked against every type the file names, and against skops' own untrusted list.
_NUMPY_SCALARS = ("bool", "bool_", "int8", "int16", "int32", "int64", "uint8", "uint16",
                  "uint32", "uint64", "float16", "float32", "float64")
ALLOWED_TYPES = frozenset(
    [f"builtins.{t}" for t in ("dict", "list", "tuple", "str", "int", "float", "bool", "NoneType")]
    + ["numpy.ndarray"] + [f"numpy.{t}" for t in _NUMPY_SCALARS]
    + ["sklearn.ensemble._forest.RandomForestClassifier",
       "sklearn.tree._classes.DecisionTreeClassifier",
       "sklearn.tree._tree.Tree"])


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


def require_skops():
    try:
        import skops.io as sio
    except ImportError as exc:
        raise UsmtlError(f"The skops package is not installed: pip install skops (or pip install "
                         f"'usmtl[radiomics]'); radiomics models are saved with it. "
                         f"Received: {exc}") from None
    return sio


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
    require_skops()  # before the long part: the forests are saved with it
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
    rows = _manifest_rows(features, manifest, features_path, manifest_path)
    x = np.full((n, len(names)), np.nan)
    x[rows] = features[names].to_numpy(float)
    return x


def _manifest_rows(features, manifest, features_path, manifest_path) -> np.ndarray:
    """The manifest row of each feature row; raises when the file is of another manifest."""
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
    return rows


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
        run.write_predictions_stamp(split)
        for name in probs:
            summary[name][f"{split}_metrics"] = binary_metrics(
                part[f"y_{name}"].to_numpy(float), part[f"p_{name}"].to_numpy(float))
    write_csv_atomic(run.file("selected_features.csv"),
                     pd.DataFrame([row for task in fitted.values() for row in task.selection]))
    save_models({name: task.model for name, task in fitted.items()}, run.file(MODELS_FILE))
    skipped = [manifest.where(i) for i in np.flatnonzero(~usable)]
    result = {"features": os.path.abspath(features_path), "n_features": len(inputs.names),
              "settings": dataclasses.asdict(settings), "skipped_rows": skipped,
              "skipped_tasks": skipped_tasks, "tasks": summary, "models": MODELS_FILE}
    run.write_json(RADIOMICS_FILE, result)
    run.mark_finished()
    result["out_dir"] = run.path
    return result


def predict_radiomics(fit_dir: str, features_path: str,
                      manifest_path: str | None = None) -> pd.DataFrame:
    """Probabilities of a fitted radiomics model (the folder of :func:`fit_radiomics`) for
    the images of a feature file of ``usmtl radiomics extract``, in the CNN's prediction
    format (``split`` from the fit's ``split.csv`` for known patients, else empty).

    Labels: ``y_<task>`` for each task of the fit's config whose label columns the manifest
    has, restricted to the task's cohort exactly as :func:`usmtl.predict.predict` does
    (:func:`usmtl.tasks.label_table`: ALNM unknown on benign masses), so that ``usmtl
    evaluate`` can score the file. ``manifest_path``: default, the manifest named in the
    feature file's sidecar (the one it was extracted from); when that file is gone, no labels
    are written and ``frame.attrs["labels"]`` says why.

    Extract the new images with the settings of the fit's features (the command checks the
    sidecars when both are present). Rows with a non-finite feature get no probability.

    Safety: the folder's side files are checked first, and the forests are read from
    ``models.skops`` only if every type it names is in :data:`ALLOWED_TYPES`; a pickled
    ``models.joblib`` (older versions) is refused, never loaded. See :func:`load_models`.

    Example:
        >>> frame = predict_radiomics("runs/radiomics", "new_features.csv")  # doctest: +SKIP
        >>> frame[["image", "p_malignancy", "y_malignancy"]].head()  # doctest: +SKIP
    """
    from usmtl.evaluation.predictions import predictions_frame
    from usmtl.radiomics.extract import read_features

    fit = open_fit(fit_dir)
    features, meta = read_features(features_path)
    models = load_models(fit.models_path, fit.selected)
    fitted_features = fit.summary.get("features")
    _check_same_extraction(fitted_features if isinstance(fitted_features, str) else None, meta,
                           features_path)
    missing = sorted({c for m in models.values() for c in m["features"]} - set(features.columns))
    if missing:
        raise UsmtlError(f"{features_path} lacks features the model uses: {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}. Received: {features_path}")
    labels, labels_note = _manifest_labels(features, features_path, manifest_path or meta.get("manifest"),
                                           fit.graph, explicit=manifest_path is not None)
    used = sorted({c for m in models.values() for c in m["features"]})
    usable = np.isfinite(features[used].to_numpy(float)).all(axis=1) if used else \
        np.ones(len(features), bool)
    part = features[usable]
    probs = {name: model["forest"].predict_proba(part[model["features"]].to_numpy(float))[:, 1]
             for name, model in models.items()}
    known = fit.run.split() if os.path.isfile(fit.run.split_path) else {}
    patients = part["patient_id"].astype(str).to_numpy()
    splits = np.array([known.get(p, "") for p in patients], dtype=object)
    labels = {name: values[usable] for name, values in labels.items() if name in probs}
    frame = predictions_frame(part["image"].to_numpy(), patients, splits, probs, labels or None,
                              [e for e in fit.graph.edges if e[0] in probs and e[1] in probs])
    frame.attrs["labels"] = labels_note
    return frame


# ---------------------------------------------------------------------------------------
# Reading a fit folder safely: side files first, then only the types of a random forest
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Fit:
    run: object          # usmtl.run.Run
    cfg: object          # the ExperimentConfig of config.yaml
    graph: object        # its TaskGraph
    summary: dict        # radiomics.json
    selected: dict       # {task: selected feature names} of radiomics.json
    models_path: str     # models.skops


def _not_a_fit(fit_dir: str, why: str) -> UsmtlError:
    return UsmtlError(f"Not a folder of 'usmtl radiomics fit': {fit_dir} {why} (a fit folder "
                      f"holds run.json, config.yaml, {RADIOMICS_FILE} and its forests in "
                      f"{MODELS_FILE}; older versions of usmtl wrote {LEGACY_MODELS_FILE}, which is "
                      f"no longer loaded). Received: {fit_dir}")


def open_fit(fit_dir: str) -> _Fit:
    """Check a fit folder's side files (``run.json``, ``config.yaml``, ``radiomics.json``) and
    find its forests, without loading them. A folder with only a pickled ``models.joblib``
    (older versions) is refused with the command that fits it again."""
    from usmtl.run import Run
    from usmtl.tasks import TaskGraph

    run = Run(fit_dir)
    if not run.exists:
        raise _not_a_fit(fit_dir, "has no run.json")
    info = run.info()
    if not isinstance(info, dict):
        raise _not_a_fit(fit_dir, f"has a run.json that is not a JSON object ({type(info).__name__})")
    if info.get("kind", "radiomics") != "radiomics":
        raise _not_a_fit(fit_dir, f"is a run of kind {info.get('kind')!r}")
    if info.get("status") != "finished":
        raise UsmtlError(f"{fit_dir}: the radiomics fit did not finish (status "
                         f"{info.get('status')!r} in run.json); fit again. Received: {fit_dir}")
    if not os.path.isfile(run.file(RADIOMICS_FILE)):
        raise _not_a_fit(fit_dir, f"has no {RADIOMICS_FILE}")
    cfg = run.config()
    graph = TaskGraph.from_config(cfg.tasks)
    summary = run.read_json(RADIOMICS_FILE)
    tasks = summary.get("tasks") if isinstance(summary, dict) else None
    bad = not isinstance(tasks, dict) or not tasks or any(
        name not in graph.names or not isinstance(task, dict)
        or not isinstance(task.get("selected"), list)
        or not all(isinstance(f, str) for f in task["selected"]) for name, task in tasks.items())
    if bad:
        raise UsmtlError(f"{run.file(RADIOMICS_FILE)} is not the summary of a radiomics fit: it "
                         f"needs 'tasks', each a task of config.yaml ({graph.names}) with its "
                         f"'selected' feature names. Received: "
                         f"{sorted(tasks) if isinstance(tasks, dict) else type(tasks).__name__}")
    models_path = run.file(MODELS_FILE)
    if not os.path.isfile(models_path):
        if os.path.exists(run.file(LEGACY_MODELS_FILE)):
            import shlex

            features = summary.get("features")
            features = shlex.quote(features) if isinstance(features, str) and features else "FEATURES.csv"
            raise UsmtlError(
                f"{fit_dir} holds {LEGACY_MODELS_FILE}, a pickle written by an older usmtl; it "
                f"is not loaded, because unpickling a file runs any code the file names. Fit "
                f"the model again with this version (it writes {MODELS_FILE}; the same split "
                f"and config): usmtl radiomics fit {features} --split-file "
                f"{shlex.quote(fit_dir)} --out {shlex.quote(fit_dir.rstrip(os.sep) + '-refit')}")
        raise _not_a_fit(fit_dir, f"has no {MODELS_FILE}")
    selected = {name: list(task["selected"]) for name, task in tasks.items()}
    return _Fit(run, cfg, graph, summary, selected, models_path)


def save_models(models: dict, path: str) -> None:
    """``{task: {"features": [...], "forest": RandomForestClassifier}}`` as a skops file,
    written beside ``path`` and renamed over it."""
    sio = require_skops()
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        sio.dump(models, tmp)
        os.replace(tmp, path)
    except Exception as exc:
        raise UsmtlError(f"Could not write {path}: {type(exc).__name__}: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def skops_types(path: str) -> set[str]:
    """Every type (``module.name``) the schema of a skops file names, read as JSON from the
    zip without building any object; raises when the file is not a skops file."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise UsmtlError(f"{path} is not a skops file of 'usmtl radiomics fit' "
                         f"({type(exc).__name__}: {exc}); fit again") from None
    found, stack = set(), [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__class__" in node or "__module__" in node:
                found.add(f"{node.get('__module__')}.{node.get('__class__')}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def load_models(path: str, selected: dict | None = None) -> dict:
    """The forests of a ``models.skops``, loaded only when every type it names is in
    :data:`ALLOWED_TYPES` (both the types of its schema and those ``skops.io`` does not trust
    by default); anything else is refused with the types named. ``selected`` (``{task:
    feature names}`` of ``radiomics.json``) must match what the file holds."""
    from sklearn.ensemble import RandomForestClassifier

    sio = require_skops()
    named = skops_types(path)
    try:
        untrusted = set(sio.get_untrusted_types(file=path))
    except Exception as exc:
        raise UsmtlError(f"{path} cannot be read as a skops file ({type(exc).__name__}: {exc}); "
                         f"fit again") from None
    refused = sorted((named | untrusted) - ALLOWED_TYPES)
    if refused:
        raise UsmtlError(f"{path} is refused: it names types a random forest of 'usmtl radiomics "
                         f"fit' does not hold: {', '.join(refused)}. Nothing was loaded; fit "
                         f"again, or load it yourself only if you trust its author")
    try:
        models = sio.load(path, trusted=sorted(untrusted))
    except Exception as exc:
        raise UsmtlError(f"{path} cannot be loaded ({type(exc).__name__}: {exc}); fit again") from None
    problems = []
    if not isinstance(models, dict) or not models:
        problems.append(f"not a dict of tasks ({type(models).__name__})")
    else:
        for name, model in models.items():
            ok = (isinstance(model, dict) and set(model) == {"features", "forest"}
                  and isinstance(model["forest"], RandomForestClassifier)
                  and isinstance(model["features"], list)
                  and all(isinstance(f, str) for f in model["features"])
                  and getattr(model["forest"], "n_features_in_", None) == len(model["features"]))
            if not ok:
                problems.append(f"task {name!r} is not {{'features': [names], 'forest': a fitted "
                                f"RandomForestClassifier on them}}")
            elif selected is not None and model["features"] != selected.get(name):
                problems.append(f"task {name!r} uses other features than {RADIOMICS_FILE} lists")
        if selected is not None and set(models) != set(selected):
            problems.append(f"tasks {sorted(models)} differ from {RADIOMICS_FILE}'s {sorted(selected)}")
    if problems:
        raise UsmtlError(f"{path} does not hold the forests of its fit: {'; '.join(problems)}")
    return models


def _manifest_labels(features, features_path, manifest_path, graph, explicit: bool):
    """``({task: labels per feature row}, note)``: the labels of the manifest the features
    come from, each restricted to its task's cohort (:func:`usmtl.tasks.label_table`), for
    the tasks whose columns the manifest has. No manifest (given, or named in the sidecar and
    still there): no labels."""
    from usmtl.data.manifest import read_manifest
    from usmtl.tasks import TaskGraph, label_table

    if not manifest_path:
        return {}, "no labels: the feature file's sidecar names no manifest (pass one)"
    if not os.path.isfile(manifest_path):
        if explicit:
            raise UsmtlError(f"Manifest not found. Received: {manifest_path}")
        return {}, (f"no labels: {manifest_path}, the manifest the features were extracted "
                    f"from, is gone (pass one)")
    manifest = read_manifest(manifest_path)
    present = graph.present(manifest.frame.columns)
    if not present.tasks:
        return {}, f"no labels: {manifest_path} has no label column of the fit's tasks"
    rows = _manifest_rows(features, manifest, features_path, manifest_path)
    table = label_table(manifest, TaskGraph(present.tasks))
    return ({name: values[rows] for name, values in table.items()},
            f"labels of {', '.join(table)} from {manifest_path}")


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
