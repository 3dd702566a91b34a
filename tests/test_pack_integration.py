"""A packed crop file stands in for its manifest (issue 15): the data a fit prepares from
it, the crops its pipelines read and the predictions of a run are those of the manifest."""

import numpy as np
import pytest

from usmtl.errors import UsmtlError


@pytest.fixture(scope="module")
def packed(phantoms, tmp_path_factory):
    """The phantoms at the tiny config's crop settings, with the trained run's split."""
    from usmtl.config import config_from_dict
    from usmtl.data.pack import write_pack

    from tests.conftest import tiny_config_dict

    cfg = config_from_dict(tiny_config_dict())
    out = tmp_path_factory.mktemp("pack") / "phantoms.pack"
    write_pack(str(phantoms), str(out), image_size=cfg.data.image_size,
               roi_margin=cfg.data.roi_margin, square_roi=cfg.data.square_roi, progress=False)
    return cfg, out


def test_fit_data_from_a_pack_equal_the_manifests(phantoms, packed):
    from usmtl.data.crops import Crops
    from usmtl.data.prepare import prepare_data

    cfg, pack = packed
    from_csv = prepare_data(cfg, str(phantoms), warn=None)
    from_pack = prepare_data(cfg, str(pack), warn=None)
    assert from_pack.manifest.pack is not None and from_csv.manifest.pack is None
    np.testing.assert_array_equal(from_pack.row_split, from_csv.row_split)
    assert from_pack.split == from_csv.split
    for task, labels in from_csv.labels.items():
        np.testing.assert_array_equal(from_pack.labels[task], labels)
    val = np.flatnonzero(from_csv.row_split == "val")
    a = Crops.from_manifest(from_csv.manifest, val, cfg.data).load()
    b = Crops.from_manifest(from_pack.manifest, val, cfg.data).load()
    assert a.shape == (len(val), 32, 32, 3) and np.array_equal(a, b)
    # A subset keeps each row's own crop (rows are not renumbered into the pack).
    test = from_pack.row_split == "test"
    sub = from_pack.manifest.subset(test)
    c = Crops.from_manifest(sub, range(len(sub)), cfg.data).load()
    d = Crops.from_manifest(from_csv.manifest, np.flatnonzero(test), cfg.data).load()
    assert np.array_equal(c, d)


def test_predict_on_a_pack_equals_predict_on_its_manifest(phantoms, packed, trained_run):
    from usmtl.predict import predict

    _, pack = packed
    csv = predict(str(trained_run), str(phantoms), split="test")
    from_pack = predict(str(trained_run), str(pack), split="test")
    assert list(csv["image"]) == list(from_pack["image"]) and len(csv) > 10
    for column in [c for c in csv.columns if c.startswith(("p_", "y_"))]:
        np.testing.assert_allclose(from_pack[column], csv[column], atol=1e-6, err_msg=column)


def test_a_pack_with_other_crop_settings_is_refused_naming_them(phantoms, packed):
    from usmtl.config import config_from_dict
    from usmtl.data.crops import Crops
    from usmtl.data.prepare import prepare_data

    from tests.conftest import tiny_config_dict

    _, pack = packed
    cfg = config_from_dict(tiny_config_dict(data={"image_size": 48}))
    data = prepare_data(cfg, str(pack), warn=None)
    with pytest.raises(UsmtlError, match=r"image_size.*32.*48"):
        Crops.from_manifest(data.manifest, [0], cfg.data)


@pytest.mark.parametrize("reader", ["explain", "duplicates", "radiomics"])
def test_readers_that_need_whole_images_refuse_a_pack_by_name(packed, trained_run, tmp_path,
                                                              reader):
    _, pack = packed
    with pytest.raises(UsmtlError, match=r"packed crop file.*original images"):
        if reader == "explain":
            from usmtl.explain.driver import select_inputs

            select_inputs(str(trained_run), str(pack))
        elif reader == "duplicates":
            from usmtl.data.duplicates import manifest_pairs

            manifest_pairs(str(pack))
        else:
            from usmtl.radiomics.extract import extract_features

            extract_features(str(pack), str(tmp_path / "features.csv"))
