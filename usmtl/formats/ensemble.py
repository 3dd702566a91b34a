"""The ``ensemble`` format: a folder whose ``ensemble.json`` names several models of the same
tasks and RoI settings (runs, ``.keras`` files or exports), the rule that combines their
probabilities and the test-time augmentation (:mod:`usmtl.evaluation.ensemble`).

``usmtl ensemble OUT MODEL...`` writes one (an experiment folder stands for all its runs).
Through the one door (:func:`usmtl.formats.open_model`) predict, evaluate, validate, bench
and export take it like any model: the prediction combines the members' own head scores
(a member's ``usmtl calibrate`` map is not applied to the ensemble); an export is one model that computes every member and combines them in the graph.

The ensemble's source run (for ``--split``) is its members' when they all share one split,
as an experiment's repeats do; members trained on different splits (a cross-validation's
folds) have none.

Example:
    >>> from usmtl.formats.ensemble import write_ensemble
    >>> write_ensemble("ens", ["exp/runs/single-bm"], rule="mean")  # doctest: +SKIP
    'ens'
"""

from __future__ import annotations

import functools
import os

import numpy as np

from usmtl.errors import UsmtlError
from usmtl.export.runtime import Runtime
from usmtl.formats import Format, Found, register

ENSEMBLE_FILE = "ensemble.json"


def member_paths(specs) -> list[str]:
    """Model paths from ``specs``: each a model path, or an experiment folder (or any folder
    holding runs below it) standing for every finished run under it, in sorted order."""
    from usmtl.formats import recognise
    from usmtl.run import RUN_FILE

    paths = []
    for spec in specs:
        spec = os.fspath(spec)
        if recognise(spec) is not None:
            paths.append(spec)
            continue
        found = sorted(root for root, _, files in os.walk(spec) if RUN_FILE in files) \
            if os.path.isdir(spec) else []
        if not found:
            raise UsmtlError(f"{spec} is neither a model nor a folder with runs under it. "
                             f"Received: {spec}")
        paths += found
    if not paths:
        raise UsmtlError("An ensemble needs at least one member. Received: none")
    return paths


def write_ensemble(out: str, specs, rule: str = "mean", tta: str = "none") -> str:
    """Write ``out/ensemble.json`` for the models ``specs`` name (see :func:`member_paths`),
    after checking that they open and agree on tasks and RoI settings; returns ``out``.

    Raises:
        UsmtlError: an existing ``out/ensemble.json``, a member that does not open, members of
            other tasks or RoI settings, an unknown rule or TTA.
    """
    from usmtl.atomic import write_json_atomic
    from usmtl.evaluation.ensemble import check_rule, check_tta

    check_rule(rule), check_tta(tta)
    target = os.path.join(out, ENSEMBLE_FILE)
    if os.path.exists(target):
        raise UsmtlError(f"{target} exists; choose a new folder. Received: {out}")
    members = [os.path.abspath(p) for p in member_paths(specs)]
    _describe_members(members, target)
    os.makedirs(out, exist_ok=True)
    write_json_atomic(target, {"members": [os.path.relpath(p, os.path.abspath(out)) for p in members],
                               "rule": rule, "tta": tta,
                               "note": "members' head probabilities combined by the rule; "
                                       "their own recalibrations are not applied"})
    return out


def _describe_members(paths, where: str):
    """``(config, run_dir or None)`` of the ensemble: the first member's config, after every
    member is checked to predict the same tasks from the same crops."""
    from usmtl.config import config_to_dict
    from usmtl.data.splits import load_split
    from usmtl.formats import open_model

    opened = [open_model(p) for p in paths]
    first = opened[0]
    if first.cfg is None:
        raise UsmtlError(f"{where}: member {paths[0]} carries no usmtl config. Received: {paths[0]}")
    keys = ("image_size", "roi_margin", "square_roi", "inpaint_marks")
    tasks = [t.name for t in first.cfg.tasks]
    for path, o in zip(paths[1:], opened[1:]):
        if o.cfg is None or [t.name for t in o.cfg.tasks] != tasks:
            raise UsmtlError(f"{where}: member {path} predicts other tasks than {paths[0]} "
                             f"({tasks}). Received: "
                             f"{None if o.cfg is None else [t.name for t in o.cfg.tasks]}")
        a, b = config_to_dict(first.cfg)["data"], config_to_dict(o.cfg)["data"]
        for key in keys:
            if a[key] != b[key]:
                raise UsmtlError(f"{where}: member {path} crops with data.{key} = {b[key]!r}, "
                                 f"member {paths[0]} with {a[key]!r}; an ensemble's members see "
                                 f"the same crop. Received: {b[key]!r}")
    splits = {None if o.run_dir is None else tuple(sorted(load_split(o.run_dir).items()))
              if os.path.isfile(os.path.join(o.run_dir, "split.csv")) else None for o in opened}
    one_run = len({o.run_dir for o in opened}) == 1  # one run, however often named
    run_dir = first.run_dir if one_run or (len(splits) == 1 and None not in splits) else None
    return first.cfg, run_dir, opened


class EnsembleModel(Runtime):
    """The members' runtimes, combined (``kind`` ``ensemble``)."""

    kind = "ensemble"
    runtime_label = "members in turn, combined"

    def __init__(self, opened, cfg, rule: str, tta: str, artifact: str):
        self.opened, self.cfg, self.rule, self.tta = opened, cfg, rule, tta
        self.artifact = artifact
        self.tasks = [t.name for t in cfg.tasks]
        self.image_size = cfg.data.image_size

    @property
    def members(self):
        return [o.model for o in self.opened]

    def combine_members(self, outputs) -> dict:
        from usmtl.evaluation.ensemble import combine

        return {t: combine([np.ravel(o[t]) for o in outputs], self.rule) for t in self.tasks}

    def _run(self, images):
        from usmtl.evaluation.ensemble import combine

        views = [images] + ([np.ascontiguousarray(images[:, :, ::-1])] if self.tta == "flip" else [])
        per_member = []
        for m in self.members:
            outs = [m.run(v) for v in views]
            per_member.append({t: combine([np.ravel(o[t]) for o in outs], self.rule) for t in self.tasks})
        return self.combine_members(per_member)

    def predict_crops(self, crops, batch_size: int = 32) -> dict:
        return self.combine_members(self.member_predictions(crops, batch_size))

    def member_predictions(self, crops, batch_size: int = 32) -> list[dict]:
        """Each member's ``{task: probabilities}`` (with the TTA), for the predictions CSV."""
        from usmtl.evaluation.ensemble import predict_with_tta

        return [predict_with_tta(m, crops, batch_size, self.tta, self.rule) for m in self.members]

    @functools.cached_property
    def keras(self):
        """One float32 Keras model of every member, combined in the graph (TTA: the mirrored
        image through every member too)."""
        from usmtl.export.graph import float32_model, heads_model
        from usmtl.model.ensemble import ensemble_model

        heads = []
        for o in self.opened:
            if not o.format.keras:
                raise UsmtlError(f"{o.path} is a {o.format.name} export; an ensemble is made into "
                                 f"one model from Keras members only. Received: {o.path}")
            model32, _ = float32_model(o.model.keras, o.cfg)
            heads.append(heads_model(model32, self.tasks))
        if self.tta == "flip":
            heads = _with_flip(heads, self.tasks, self.rule)
        return ensemble_model(heads, self.tasks, self.rule)


def _with_flip(heads, tasks, rule):
    """Each member as the ``rule`` combination of itself on the image and on its mirror."""
    import keras

    from usmtl.model.ensemble import EnsembleCombine, Mirror

    out = []
    for k, m in enumerate(heads, start=1):
        image = keras.Input(shape=tuple(m.inputs[0].shape[1:]), dtype=m.inputs[0].dtype, name="image")
        mirror = Mirror(name="mirror")(image)
        a, b = m(image), m(mirror)
        out.append(keras.Model(image, {t: EnsembleCombine(rule, name=t)([a[t], b[t]]) for t in tasks},
                               name=f"tta_{k}"))
    return out


class EnsembleFormat(Format):
    name = "ensemble"
    accepts = f"an ensemble folder ({ENSEMBLE_FILE}, written by usmtl ensemble)"
    keras = True  # made into one Keras model (exports are made from it)
    run_calibration = False  # a member's calibration.json is not the ensemble's
    bench_label = "ensemble (members in turn)"

    def recognise(self, path: str) -> Found | None:
        if os.path.isdir(path) and os.path.isfile(os.path.join(path, ENSEMBLE_FILE)):
            return Found(self, path, path, None)
        return None

    @staticmethod
    def _spec(found: Found) -> dict:
        from usmtl.atomic import read_json

        where = os.path.join(found.path, ENSEMBLE_FILE)
        try:
            spec = read_json(where)
            members = [os.path.normpath(os.path.join(found.path, p)) for p in spec["members"]]
            rule, tta = spec.get("rule", "mean"), spec.get("tta", "none")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsmtlError(f"{where} is not an ensemble description ({exc}). Received: "
                             f"{found.path}") from None
        if not members:
            raise UsmtlError(f"{where} names no member. Received: {found.path}")
        return {"members": members, "rule": rule, "tta": tta, "where": where}

    def describe(self, found: Found, require_side_files: bool = True):
        spec = self._spec(found)
        cfg, run_dir, _ = _describe_members(spec["members"], spec["where"])
        return cfg, run_dir

    def load(self, found: Found, threads: int | None = None, batch: int | None = None):
        from usmtl.evaluation.ensemble import check_rule, check_tta

        spec = self._spec(found)
        cfg, _, opened = _describe_members(spec["members"], spec["where"])
        return EnsembleModel(opened, cfg, check_rule(spec["rule"]), check_tta(spec["tta"]),
                             found.path)


FORMAT = register(EnsembleFormat())
