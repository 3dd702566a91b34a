"""Importers: turn the layout of a public data set, or a LabelImg folder, into a manifest.

Each importer checks the whole input first and raises one :class:`ManifestError` listing
every problem, so nothing is written from bad input. The manifest is written atomically,
with paths relative to its own folder so that the pair can be moved together.

Each importer then says what it did, through ``log`` (``print`` by default; the CLI's own
echo): what it skipped and why, counted (BUSI's normal images, images without a row or an
annotation), and the near-duplicate image pairs it found (:mod:`usmtl.data.duplicates`),
all listed in ``<out stem>_duplicates.csv`` beside the manifest. Data sets without patient
ids (BUSI, a LabelImg table without ``patient_id``) merge the patients of near-duplicate
images into one by default (``group_duplicates``), so that a split keeps them together; the
others only report them. It ends with ``N rows written to OUT, K skipped: ...``; the same
counts are in ``frame.attrs["import_report"]``.

One module per source, each registering its :class:`Importer` (:mod:`._registry`, the way
:mod:`usmtl.formats` registers model formats):

- ``busbra`` (:func:`import_busbra`): BUS-BRA's ``bus_data.csv``, ``Images/``, ``Masks/``;
- ``busi`` (:func:`import_busi`): BUSI's class folders and lesion masks;
- ``labelimg`` (:func:`import_labelimg`): any folder of images (PNG, JPEG, BMP, DICOM) with
  LabelImg XML boxes and a label table.

What they share (reading tables, the report, writing the manifest and its near-duplicate
list) is :mod:`._common`.

Example:
    >>> from usmtl.data.importers import import_busbra, registered
    >>> [importer.name for importer in registered()][:3]
    ['busbra', 'busi', 'labelimg']
    >>> frame = import_busbra("../shared/data/BUS-BRA", "busbra.csv")  # doctest: +SKIP
    >>> len(frame), frame["patient_id"].nunique()  # doctest: +SKIP
    (1875, 1064)
"""

from usmtl.data.importers._common import LABELIMG_SUFFIXES, duplicates_path
from usmtl.data.importers._registry import Importer, get, register, registered, unregister
from usmtl.data.importers.busbra import BOX_SOURCES, BUSBRA_COLUMNS, IDC, import_busbra
from usmtl.data.importers.busi import BUSI_CLASSES, BUSI_LAYOUT, import_busi
from usmtl.data.importers.labelimg import import_labelimg

__all__ = ["Importer", "register", "unregister", "registered", "get", "import_busbra",
           "import_busi", "import_labelimg", "duplicates_path", "LABELIMG_SUFFIXES",
           "BOX_SOURCES", "BUSBRA_COLUMNS", "IDC", "BUSI_CLASSES", "BUSI_LAYOUT"]
