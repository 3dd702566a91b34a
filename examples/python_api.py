"""The quickstart from Python, as a notebook would run it: phantoms, a check, a short fit,
test-set predictions. Run: python examples/python_api.py [OUT_DIR]"""

import os
import sys

from usmtl.config import load_config
from usmtl.data.manifest import check_manifest
from usmtl.data.phantoms import make_phantoms
from usmtl.evaluation.metrics import binary_metrics, format_table
from usmtl.predict import predict
from usmtl.training.fit import fit

out = sys.argv[1] if len(sys.argv) > 1 else "runs/example"
data_dir, run_dir = os.path.join(out, "data"), os.path.join(out, "run")

make_phantoms(data_dir, n_patients=200, seed=0)
manifest = os.path.join(data_dir, "manifest.csv")
assert check_manifest(manifest) == []

cfg = load_config("quickstart", ["train.epochs=10"])  # a preset shipped with usmtl
result = fit(cfg, manifest, run_dir)
print(format_table(result.val_metrics))

test = predict(run_dir, manifest, split="test")
print("Test set:")
print(format_table({t.name: binary_metrics(test[f"y_{t.name}"], test[f"p_{t.name}"])
                    for t in cfg.tasks}))
