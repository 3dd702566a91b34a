"""predict, explain and export run usmtl check's checks, images decoded, before writing;
errors name the manifest's own line, also after --split keeps a subset of it."""

import pandas as pd
import pytest

from tests.conftest import invoke, train_tiny_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, phantoms):
    return train_tiny_run(tmp_path_factory.mktemp("run") / "run", phantoms, epochs=1)


@pytest.fixture
def broken(tiny_run, phantoms, tmp_path):
    """The phantoms with one test-split image emptied (a zero-byte PNG); its file line."""
    frame = pd.read_csv(phantoms, dtype=str, keep_default_na=False)
    split = pd.read_csv(tiny_run / "split.csv", dtype=str)
    test_patients = set(split.loc[split["split"] == "test", "patient_id"])
    row = next(i for i, p in enumerate(frame["patient_id"]) if p in test_patients and i > 5)
    for column in ("image", "annotation"):
        frame[column] = [str(phantoms.parent / p) for p in frame[column]]
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    frame.loc[row, "image"] = str(empty)
    frame.to_csv(tmp_path / "m.csv", index=False)
    return tmp_path / "m.csv", row + 2


@pytest.mark.parametrize("command", ["predict", "explain"])
def test_reader_refuses_an_undecodable_image_naming_its_file_line(tiny_run, broken, tmp_path,
                                                                 command):
    manifest, line = broken
    out = tmp_path / "out"
    args = {"predict": ("predict", tiny_run, manifest, "--split", "test", "--out", out),
            "explain": ("explain", tiny_run, manifest, "--task", "malignancy", "--split", "test",
                        "--out", out)}[command]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert f"m.csv line {line} (image=" in result.output and "empty.png" in result.output
    assert not out.exists()
