"""usmtl ablation on hand-made experiment folders (no training): pairing by repeat, the child
scored within its parent's positives, the validation-selected arm, and bad arms."""

import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import invoke


def _experiment(root, variant, scores_by_repeat, val_by_repeat, child_shift=0.0):
    """Fake finished repeats: test predictions with a parent and a child head."""
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(20), np.zeros(20)]
    child_y = np.r_[rng.integers(0, 2, 20).astype(float), np.full(20, np.nan)]
    for k, noise in scores_by_repeat.items():
        run = root / "runs" / variant / f"repeat-{k}"
        run.mkdir(parents=True)
        p = np.clip(y * 0.3 + 0.35 + noise * rng.normal(0, 1, 40), 0, 1)
        child = np.clip(0.2 + 0.5 * np.nan_to_num(child_y) + child_shift, 0, 1)
        pd.DataFrame({"image": [f"i{j}.png" for j in range(40)], "y_malignancy": y,
                      "p_malignancy": p, "y_birads5": child_y, "p_birads5": child}).to_csv(
            run / "test_predictions.csv", index=False)
        (run / "val_metrics.json").write_text(json.dumps({"malignancy": {"auc": val_by_repeat[k]}}))
        pd.DataFrame({"epoch": [0, 1], "val_auc_malignancy": [0.5, val_by_repeat[k] + 0.01]}).to_csv(
            run / "history.csv", index=False)
    return root


def test_ablation_pairs_repeats_and_selects_on_validation(tmp_path):
    ref = _experiment(tmp_path / "main", "single-bm", {1: 0.05, 2: 0.06}, {1: 0.9, 2: 0.8})
    a = _experiment(tmp_path / "a", "multitask-hl", {1: 0.30, 2: 0.35}, {1: 0.7, 2: 0.95})
    b = _experiment(tmp_path / "b", "multitask-hl", {1: 0.10, 2: 0.12}, {1: 0.8, 2: 0.6})
    out = tmp_path / "ablation.md"
    result = invoke("ablation", "--arm", f"Single-BM={ref}:single-bm",
                    "--arm", f"A={a}:multitask-hl", "--arm", f"B={b}:multitask-hl",
                    "--task", "malignancy", "--select", "chosen=A,B", "--out", out)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "ablation.csv").set_index("arm")
    assert frame.loc["A", "diff_paired"] < frame.loc["B", "diff_paired"] < 0  # noisier: lower AUC
    assert frame.loc["chosen", "chosen"] == "B, A"  # repeat 1: B (0.8 > 0.7); repeat 2: A
    assert frame.loc["Single-BM", "val_auc_best_epoch"] == pytest.approx(0.86)
    assert frame.loc["A", "child_auc_mean"] == pytest.approx(1.0)  # within the 20 malignant
    assert "| chosen (chosen: B, A) | 2 |" in out.read_text()


def test_ablation_refuses_arms_on_other_images(tmp_path):
    ref = _experiment(tmp_path / "main", "single-bm", {1: 0.05}, {1: 0.9})
    other = _experiment(tmp_path / "o", "multitask", {1: 0.05}, {1: 0.9})
    frame = pd.read_csv(other / "runs" / "multitask" / "repeat-1" / "test_predictions.csv")
    frame.iloc[:-1].to_csv(other / "runs" / "multitask" / "repeat-1" / "test_predictions.csv",
                           index=False)
    result = invoke("ablation", "--arm", f"R={ref}:single-bm", "--arm", f"O={other}:multitask",
                    "--task", "malignancy")
    assert result.exit_code == 2 and "share one split" in result.output
    result = invoke("ablation", "--arm", f"R={ref}:multitask", "--task", "malignancy")
    assert result.exit_code == 2 and "no runs of variant 'multitask'" in result.output
    result = invoke("ablation", "--arm", f"R{ref}", "--task", "malignancy")
    assert result.exit_code == 2 and "LABEL=EXPERIMENT:VARIANT" in result.output
