"""A packed crop file: every RoI crop of a manifest, its rows and split, in one file.

``usmtl pack MANIFEST --size 256 --out busbra256.pack`` crops every row once, exactly as
training does (:func:`usmtl.data.roi.load_roi`: margin, squaring, optional inpainting,
resize), and writes the crops, the manifest's rows (labels, patient ids, every column) and
optionally a split into one file. The pack stands in for the manifest where neither the
original images nor TensorFlow are at hand (a GPU machine with JAX): reading it needs
numpy, pandas and OpenCV only. This module imports neither TensorFlow nor Keras.

The pack lives in four modules, and this one gathers their public names:

- :mod:`usmtl.data.pack_format`: the file's entries, the crop codecs (with their sizes,
  times and AUC changes measured on BUS-BRA), :func:`is_pack`;
- :mod:`usmtl.data.pack_write`: :func:`write_pack` and its :class:`PackSummary`;
- :mod:`usmtl.data.pack_read`: :func:`open_pack` and the open :class:`Pack`;
- :mod:`usmtl.data.pack_meta`: ``pack.json`` checked before anything is allocated.

Example:
    >>> from usmtl.data.pack import open_pack, write_pack
    >>> summary = write_pack("demo/manifest.csv", "demo64.pack", image_size=64,
    ...                      roi_margin=0.2)  # doctest: +SKIP
    >>> pack = open_pack("demo64.pack")  # doctest: +SKIP
    >>> pack.crops().shape, pack.frame["malignant"][:2].tolist()  # doctest: +SKIP
    ((445, 64, 64, 3), ['1', '0'])
"""

from usmtl.data.pack_format import (AUTO_CODEC, CODECS, CROP_KEYS, CROPS, DEFAULT_JPEG_QUALITY,
                                    EXTENSIONS, FORMAT_VERSION, MANIFEST, META, PNG_LEVEL, SUFFIX,
                                    decode_crop, default_workers, encode_crop, is_grey, is_pack)
from usmtl.data.pack_read import Pack, open_pack
from usmtl.data.pack_write import PackSummary, write_pack

__all__ = ["AUTO_CODEC", "CODECS", "CROP_KEYS", "CROPS", "DEFAULT_JPEG_QUALITY", "EXTENSIONS",
           "FORMAT_VERSION", "MANIFEST", "META", "PNG_LEVEL", "SUFFIX", "Pack", "PackSummary",
           "decode_crop", "default_workers", "encode_crop", "is_grey", "is_pack", "open_pack",
           "write_pack"]
