"""The model card's sections from Mitchell et al., "Model Cards for Model Reporting"
(FAT* 2019) that no evaluation fills: factors, ethical considerations, licence, authors and
contact, citation; the reading of a calibration slope; and the card's JSON twin.

Example:
    >>> from usmtl.card_sections import slope_reading
    >>> slope_reading(0.6), slope_reading(1.4)
    ('over-confident scores: too extreme', 'under-confident scores: too cautious')
    >>> slope_reading(-2.86)
    'inverted ranking: higher scores go with fewer positives'
"""

from __future__ import annotations

import datetime
import math

from usmtl._version import __version__

PAPER = ("Li C., Guo Y., et al. A Convolutional Neural Network Based on Ultrasound Images of "
         "Primary Breast Masses: Prediction of Lymph-Node Metastasis in Collaboration With "
         "Classification of Benign and Malignant Tumors. Front. Physiol. 13:882648 (2022).")


def slope_reading(slope: float) -> str:
    """What a calibration slope says about the scores. A slope below 0 is not "more
    over-confident" than one in (0, 1): the ranking itself is reversed."""
    if slope <= 0:
        return "inverted ranking: higher scores go with fewer positives"
    if slope < 1:
        return "over-confident scores: too extreme"
    return "under-confident scores: too cautious"


def factors(by) -> list[str]:
    """Mitchell et al.'s "Factors": the groups, instruments and settings that may change
    performance, and which of them this card evaluates."""
    evaluated = (f"Evaluated here: {', '.join(f'`{c}`' for c in by)} (see Subgroups)."
                 if by else "Evaluated here: none (pass `--by COLUMN`, for example "
                            "`--by device`, to add subgroup analyses).")
    return ["Relevant factors: the ultrasound scanner and probe (vendor, model, frequency), "
            "the operator and centre, image preprocessing and burned-in annotations, the "
            "patients' age and breast density, lesion size, and the prevalence of each "
            "condition in the population scanned.", "", evaluated]


def ethics() -> list[str]:
    return ["- Data: ultrasound images are health data; train and share only under the "
            "consent and approvals of their source, de-identified (burned-in text included).",
            "- Risks: a false negative may delay a biopsy or axillary staging; a false "
            "positive may prompt needless procedures. Scores must not replace a clinician's "
            "reading.",
            "- Fairness: performance may differ across scanners, centres and populations "
            "absent from the training data; check the Subgroups and External validation "
            "sections before any use elsewhere.",
            "- Shortcuts: a model can learn calipers, text or device marks instead of the "
            "lesion; the Shortcut audit measures that."]


def licence() -> list[str]:
    return [f"Software: usmtl {__version__}, Apache License 2.0 (`LICENSE`). The trained "
            f"weights and predictions are derived from the training data: their use is also "
            f"bound by that data's licence and approvals."]


def authors(info: dict) -> list[str]:
    trained = info.get("finished") or info.get("started") or "an unrecorded date"
    return [f"Trained with usmtl on {trained}. Model developers and contact: **fill in before "
            f"sharing this card** (who trained the model, and where to report problems)."]


def citation() -> list[str]:
    return ["Cite the method and the software (`CITATION.cff`):", "",
            f"- {PAPER}",
            f"- usmtl {__version__}: multi-task CNN for breast ultrasound with a hierarchical "
            f"hinge (software)."]


def json_twin(run_dir: str, cfg, sections: dict, report: dict, by) -> dict:
    """The card's machine-readable twin: metadata, per-task image-level figures with their
    CIs, and every section's Markdown lines."""
    tasks = {}
    for task, entry in report["tasks"].items():
        image = entry.get("image", {})
        tasks[task] = {"n": entry.get("n"), "positives": entry.get("positives"),
                       **{name: image[name] for name in ("auc", "sensitivity", "specificity",
                                                          "accuracy") if name in image}}
        slope = entry.get("calibration", {}).get("slope")
        if slope:
            tasks[task]["calibration_slope"] = slope
    return _strict({"schema": "usmtl model card 1", "run": run_dir, "model": cfg.name,
            "usmtl_version": __version__,
            "written": datetime.datetime.now().isoformat(timespec="seconds"),
            "tasks_evaluated": tasks, "factors_evaluated": list(by or []),
            "citation": PAPER, "licence": "Apache-2.0 (software)",
            "sections": {name: "\n".join(lines) for name, lines in sections.items()}})


def _strict(value):
    """NaN and infinities as null, so any JSON parser reads the twin."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    try:
        if isinstance(value, float) or getattr(getattr(value, "dtype", None), "kind", "") == "f":
            number = float(value)
            return number if math.isfinite(number) else None
    except (TypeError, ValueError):
        pass
    return value
