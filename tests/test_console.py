"""What a user sees outside a terminal: `make demo`-sized commands, run as the console
script runs them, print only the lines usmtl means to print (one short line per epoch, each
warning once, no third-party chatter), and `usmtl --log FILE` keeps the rest."""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, write_config

# Every line the demo-sized commands below may print, and nothing else.
EXPECTED = [
    r"Wrote \d+ images of \d+ patients: .*manifest\.csv",
    r"warning: task '\w+': .*",
    r"warning: task '\w+' has .* among the validation images: .*",
    r"epoch +\d+/\d+  loss \d+\.\d{3}  val AUC (\w+ (\d\.\d{3}|-)(, )?)+  \(\d+ s\)",
    r"",
    r"Run: .* \(\d+ s\); best epoch: \d+",
    r"Validation metrics \(best checkpoint, threshold 0\.5\):",
    r"task +n +positives +auc +accuracy +sensitivity +specificity +precision +f1",
    r"\w+ +\d+ +\d+( +(\d\.\d{3}|-)){6}",
    r"-: not estimable \(.*\)",
    r"Wrote \d+ rows to .*\.csv; hierarchy violations: \d+",
    r"Trained: .*", r"Parent: .*", r"Children, AUC within each child's cohort: .*",
    r"Hierarchy violations: \d+ of \d+ images .*", r"The hierarchical hinge .*",
    r"Converting to TFLite \(quantize int8\)", r"Checking parity on \d+ images",
    r"Export: .*model\.tflite", r"  format tflite, quantize int8, .*",
    r"Parity vs the Keras model .*", r"  output +max\|diff\| .*", r"  \w+ +\d.*(ok|FAIL)",
    r"Latency, one image, .*", r"PARITY PASSED", r"Exported: .*", r"Report: .*parity\.json",
]


def _usmtl(*args, cwd):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "USMTL_LOG_LEVEL", "USMTL_LOG_FILE")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-c", "from usmtl.cli import main; main()",
                           *[str(a) for a in args]], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """demo-data, fit (with --log), predict, the demo's summary and an int8 export, tiny."""
    out = tmp_path_factory.mktemp("demo")
    data, run, log = out / "data", out / "run", out / "fit.log"
    config = write_config(out / "tiny.yaml", train={"epochs": 2})
    steps = [_usmtl("demo-data", data, "--patients", 40, "--size", 64, cwd=out),
             _usmtl("--log", log, "fit", "--config", config, "--manifest",
                    data / "manifest.csv", "--out", run, cwd=out),
             _usmtl("predict", run, data / "manifest.csv", "--split", "test", "--out",
                    out / "test.csv", cwd=out),
             subprocess.run([sys.executable, "-m", "usmtl.evaluation.summary", str(run),
                             str(out / "test.csv")], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=out),
             _usmtl("export", run, "--format", "tflite", "--quantize", "int8", "--manifest",
                    data / "manifest.csv", "--out", out / "int8", cwd=out)]
    for step in steps:
        assert step.returncode == 0, step.stdout + step.stderr
    return steps, log


@pytest.mark.slow
def test_demo_sized_commands_print_no_unexpected_line(demo):
    steps, _ = demo
    lines = [line for step in steps for line in (step.stdout + step.stderr).splitlines()]
    unexpected = [line for line in lines if not any(re.fullmatch(p, line) for p in EXPECTED)]
    assert not unexpected, "\n".join(unexpected)
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == len(set(warnings)), warnings
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 2 and all(len(line) < 160 for line in epochs), epochs
    assert len(steps[3].stdout.splitlines()) == 5  # the demo's summary


@pytest.mark.slow
def test_the_log_keeps_everything(demo):
    _, log = demo
    text = log.read_text()
    assert re.search(r"epoch 2: .*val_auc_malignancy=", text)  # the full metrics
    assert "Run: " in text  # and the console's own lines


def test_a_warning_is_said_once_per_command_and_every_time_outside_one(capsys):
    from usmtl.console import said_once, warn_once

    with said_once():  # as every usmtl command: an experiment's four fits warn once
        for _ in range(4):
            warn_once(("no validation AUC", "aln_ge_4"), "task 'aln_ge_4' has no known label")
    assert capsys.readouterr().err.count("warning: task 'aln_ge_4'") == 1
    for _ in range(2):  # a notebook's two fit() calls: each says it
        warn_once(("no validation AUC", "aln_ge_4"), "task 'aln_ge_4' has no known label")
    assert capsys.readouterr().err.count("warning: task 'aln_ge_4'") == 2
