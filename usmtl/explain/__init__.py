"""Grad-CAM explanations for every task head (``usmtl explain``, ``usmtl cam-profile``).

- :func:`explain`: Grad-CAM / Grad-CAM++ maps of a run for an image or a manifest, written
  as ``.npy`` heatmaps, PNG overlays, a contact sheet, and a side-by-side with a second run.
- :func:`profile_runs` / :func:`radial_profile`: mean CAM response against normalised
  distance from the RoI centre, for one or several runs.
- :func:`shortcut_audit`: does each head's map look at the lesion (box, mask) more than a
  uniform map would, and at burned-in marks (calipers, text)? Per-image CSV, summary with
  patient-bootstrap CIs and WARNING lines (``usmtl explain --audit``).
- :class:`GradCam` / :func:`compute_cams`: the maps themselves, for a model in memory.

Grad-CAM: Selvaraju et al., ICCV 2017. Grad-CAM++: Chattopadhay et al., WACV 2018. The
figures follow Li, Guo et al., Front. Physiol. 13:882648 (2022), Figure 6 and Supplementary
Figure S1. Importing this package does not import TensorFlow.

Example:
    >>> from usmtl.explain import explain
    >>> frame = explain("runs/quickstart", "runs/demo-data/manifest.csv", tasks=["alnm"],
    ...                 split="test", limit=12, out="runs/explain")  # doctest: +SKIP
"""

from usmtl.explain.audit import shortcut_audit
from usmtl.explain.driver import explain, profile_runs
from usmtl.explain.gradcam import METHODS, ExplainError, GradCam, compute_cams
from usmtl.explain.inputs import select_inputs
from usmtl.explain.profile import radial_profile

__all__ = ["explain", "profile_runs", "select_inputs", "shortcut_audit", "radial_profile",
           "GradCam", "compute_cams", "METHODS", "ExplainError"]
