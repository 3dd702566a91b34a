"""Near-duplicate images: perceptual hashes, pairs within a Hamming distance, patient groups.

A re-encoded copy of an image (another JPEG quality, a slight rescale, a shift of a few
pixels) filed under another patient puts the same picture on both sides of a split, and every
score made on that split is optimistic. Patient-level splitting cannot see it; a perceptual
hash can. Each image is hashed once (:func:`image_hashes`), every pair is compared in NumPy
(packed ``uint64`` words, XOR and popcount, in blocks: 10,000 images are ~5e7 pairs, a few
seconds), and the pairs within ``max_distance`` bits are reported (:func:`duplicate_report`)
or merged into one patient (:func:`group_patients`), so that a split and the patient
bootstrap keep them together.

The hash is imagehash's pHash with ``hash_size=16`` (256 bits: the 16 x 16 lowest
frequencies of the DCT of the grey image resized to 64 x 64, each above or below their
median), and the default ``max_distance`` is 56 bits (22 %). Both were chosen by measuring,
on BUS-BRA (1,875 grey PNGs of about 290 x 350 pixels, 1,064 patients, 1.76 million pairs),
the distance between distinct images, and between an image and a re-encoded copy of it
(400 random images, each transformation; the share of copies found):

=======================  =====  ========  ======  ======  ======  ====================
hash (bits), threshold   JPEG   x0.9,     shift   shift   shift   closest distinct
                         60-90  x1.1 q80  2,1 px  3,2 px  4,3 px  pair (bits)
=======================  =====  ========  ======  ======  ======  ====================
pHash 8 (64), <= 7       100 %  100 %     98.8 %  91.0 %  75.0 %  8 (one patient), 10
dHash 16 (256), <= 47    100 %  100 %     100 %   99.5 %  92.7 %  55
pHash 16 (256), <= 48    100 %  100 %     100 %   100 %   90.0 %  68
pHash 16 (256), <= 56    100 %  100 %     100 %   100 %   98.2 %  68
=======================  =====  ========  ======  ======  ======  ====================

With pHash 16, JPEG copies are at most 12 bits away, rescaled ones (x0.5 to x1.1) 10, a
3-pixel crop 32, shifts of 2 and 3 pixels 32 and 48, of 4 pixels up to 66. The closest
distinct BUS-BRA images, across patients or within one (the ``-l``/``-r`` views of one
lesion), are 68 bits apart, so 56 flags none of the 1.76 million pairs with a margin of 12
bits. Hashing takes 4.5 s for the 1,875 images (one core), comparing every pair 0.8 s.
pHash 8 and dHash 8 find distinct images 8 and 6 bits apart; average and wavelet hashes
0 bits apart (dark frames of one scanner look alike to them). BUS-BRA's images are small,
so a 4-pixel shift there is a hard case: larger images move less per pixel. Shifts of more
than a few pixels, crops of 10 pixels and more, and flips are not near-duplicates for
this hash.

Example:
    >>> import numpy as np
    >>> from usmtl.data.duplicates import hash_image, near_duplicate_pairs
    >>> rng = np.random.default_rng(0)
    >>> a = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    >>> b = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    >>> hashes = np.stack([hash_image(a), hash_image(b), hash_image(a)])
    >>> near_duplicate_pairs(hashes)
    [(0, 2, 0)]
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from usmtl.errors import ImageReadError, UsmtlError

DEFAULT_HASH_SIZE = 16
DEFAULT_MAX_DISTANCE = 56
ACROSS_SPLITS, ACROSS_PATIENTS, SAME_PATIENT = "across splits", "across patients", "same patient"
KINDS = (ACROSS_SPLITS, ACROSS_PATIENTS, SAME_PATIENT)  # most serious first
REPORT_COLUMNS = ("kind", "distance", "line_a", "image_a", "patient_a", "split_a",
                  "line_b", "image_b", "patient_b", "split_b", "across_patients", "across_splits")
PATH_COLUMNS = ("image", "mask", "annotation")
_BLOCK_ELEMENTS = 1 << 21  # uint64 words XOR-ed at once: 16 MB per block


# ---------------------------------------------------------------------------------------
# Hashes and distances
# ---------------------------------------------------------------------------------------


def hash_image(image: np.ndarray, hash_size: int = DEFAULT_HASH_SIZE) -> np.ndarray:
    """The pHash of one image as packed ``uint64`` words (``hash_size**2`` bits, zero-padded).

    Args:
        image: an ``(H, W)`` grey or ``(H, W, 3|4)`` colour uint8 array, as
            :func:`usmtl.data.io.read_image` returns.
        hash_size: side of the DCT block kept; the hash has ``hash_size**2`` bits.

    Returns:
        A ``(ceil(hash_size**2 / 64),)`` uint64 array.

    Example:
        >>> import numpy as np
        >>> from usmtl.data.duplicates import hash_image
        >>> hash_image(np.zeros((32, 32), np.uint8)).shape
        (4,)
    """
    import imagehash
    from PIL import Image

    array = np.asarray(image)
    if array.ndim == 3:
        array = array[:, :, :3]
    bits = imagehash.phash(Image.fromarray(array).convert("L"), hash_size=hash_size).hash
    return _pack(bits.reshape(1, -1))[0]


def _pack(bits: np.ndarray) -> np.ndarray:
    """``(n, bits)`` bool -> ``(n, words)`` uint64, zero-padded to whole words."""
    packed = np.packbits(np.asarray(bits, bool), axis=1)
    pad = (-packed.shape[1]) % 8
    if pad:
        packed = np.pad(packed, ((0, 0), (0, pad)))
    return np.ascontiguousarray(packed).view(">u8").astype(np.uint64)


def image_hashes(paths: Sequence[str], hash_size: int = DEFAULT_HASH_SIZE,
                 progress: bool = False) -> np.ndarray:
    """pHashes of image files (any format :func:`usmtl.data.io.read_image` reads, DICOM too).

    Args:
        paths: image files.
        hash_size: see :func:`hash_image`.
        progress: a progress bar on stderr.

    Returns:
        An ``(len(paths), words)`` uint64 array, one row per path.

    Raises:
        ImageReadError: a file is missing or cannot be decoded (named).
    """
    hashes, unreadable = _hash_files(paths, hash_size, progress)
    if unreadable:
        raise unreadable[0][1]
    return hashes


def _hash_files(paths: Sequence[str], hash_size: int, progress: bool):
    """``(hashes, [(index, ImageReadError)])``: unreadable files get an all-zero row."""
    from usmtl.data.io import read_image

    words = -(-hash_size * hash_size // 64)
    hashes = np.zeros((len(paths), words), np.uint64)
    unreadable = []
    for i in _progress(range(len(paths)), "hashing images", progress):
        try:
            stat = os.stat(paths[i])
            key = (os.path.abspath(paths[i]), stat.st_size, stat.st_mtime_ns, hash_size)
        except (OSError, ValueError):
            key = None
        try:
            found = _HASHED.get(key) if key is not None else None
            if found is None:  # each fit's pre-check searches again: hash a file once
                found = hash_image(read_image(paths[i]), hash_size)
                if key is not None and len(_HASHED) < 200_000:
                    _HASHED[key] = found
            hashes[i] = found
        except ImageReadError as exc:
            unreadable.append((i, exc))
    return hashes, unreadable


_HASHED: dict = {}  # (path, size, mtime, hash size) -> hash, for this process


def _progress(items, desc: str, enabled: bool):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="image")


def _popcount(words: np.ndarray) -> np.ndarray:
    """Set bits per uint64 word (NumPy >= 2 has it built in; a byte table otherwise)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words)
    table = np.array([bin(k).count("1") for k in range(256)], np.uint8)
    return table[words.view(np.uint8)].reshape(words.shape + (8,)).sum(-1, dtype=np.uint8)


def hamming_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All Hamming distances between the rows of two packed hash arrays.

    Example:
        >>> import numpy as np
        >>> from usmtl.data.duplicates import hamming_distances
        >>> hamming_distances(np.array([[0b1011]], np.uint64), np.array([[0], [1]], np.uint64))
        array([[3, 2]])
    """
    a, b = np.asarray(a, np.uint64), np.asarray(b, np.uint64)
    return _popcount(a[:, None, :] ^ b[None, :, :]).sum(axis=2, dtype=np.int64)


def near_duplicate_pairs(hashes: np.ndarray,
                         max_distance: int = DEFAULT_MAX_DISTANCE) -> list[tuple[int, int, int]]:
    """Every pair of rows of ``hashes`` within ``max_distance`` bits, vectorised in blocks.

    Args:
        hashes: an ``(n, words)`` uint64 array (:func:`image_hashes`).
        max_distance: the largest Hamming distance that counts as a near-duplicate.

    Returns:
        ``(i, j, distance)`` with ``i < j``, sorted by ``i`` then ``j``; empty for n < 2.

    Raises:
        UsmtlError: ``hashes`` is not a 2-D array or ``max_distance`` is negative.

    Example:
        >>> import numpy as np
        >>> from usmtl.data.duplicates import near_duplicate_pairs
        >>> near_duplicate_pairs(np.array([[0], [1], [255]], np.uint64), max_distance=1)
        [(0, 1, 1)]
    """
    hashes = np.asarray(hashes)
    if hashes.ndim != 2:
        raise UsmtlError(f"hashes must be an (n, words) array. Received: shape {hashes.shape}")
    if max_distance < 0:
        raise UsmtlError(f"max_distance must be >= 0. Received: {max_distance}")
    hashes = hashes.astype(np.uint64, copy=False)
    n, words = hashes.shape
    pairs: list[tuple[int, int, int]] = []
    block = max(1, _BLOCK_ELEMENTS // max(1, n * words))
    for start in range(0, n - 1, block):
        stop = min(start + block, n - 1)
        # Rows start..stop-1 against the rows after ``start`` only: each pair once.
        distances = hamming_distances(hashes[start:stop], hashes[start + 1:])
        rows, cols = np.nonzero(distances <= max_distance)
        cols_abs = cols + start + 1
        keep = cols_abs > rows + start
        for i, j, d in zip(rows[keep] + start, cols_abs[keep], distances[rows[keep], cols[keep]]):
            pairs.append((int(i), int(j), int(d)))
    pairs.sort()
    return pairs


def duplicate_groups(pairs: Iterable[Sequence[int]], n: int | None = None) -> list[list[int]]:
    """Connected groups of near-duplicates (union-find over the pairs), two or more each.

    Args:
        pairs: ``(i, j)`` or ``(i, j, distance)`` items.
        n: the number of items (default: one more than the largest index).

    Returns:
        Groups as sorted index lists, ordered by their first index.

    Example:
        >>> from usmtl.data.duplicates import duplicate_groups
        >>> duplicate_groups([(0, 3, 2), (3, 5, 0), (1, 2, 4)])
        [[0, 3, 5], [1, 2]]
    """
    pairs = [(int(p[0]), int(p[1])) for p in pairs]
    if n is None:
        n = 1 + max((max(i, j) for i, j in pairs), default=-1)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving keeps the trees flat
            x = parent[x]
        return x

    for i, j in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return [g for g in sorted(groups.values()) if len(g) > 1]


# ---------------------------------------------------------------------------------------
# Manifests
# ---------------------------------------------------------------------------------------


def as_manifest(manifest):
    """A :class:`~usmtl.data.manifest.Manifest`; a path is parsed without judging its rows
    (``usmtl check`` reports their problems)."""
    from usmtl.data.manifest import Manifest, _parse_manifest

    if isinstance(manifest, Manifest):
        return manifest
    return _parse_manifest(os.fspath(manifest))[0]


def manifest_pairs(manifest, max_distance: int = DEFAULT_MAX_DISTANCE,
                   hash_size: int = DEFAULT_HASH_SIZE,
                   progress: bool = False) -> list[tuple[int, int, int]]:
    """Near-duplicate row pairs ``(i, j, distance)`` of a manifest (frame row positions).

    Each image file is hashed once. Rows naming the same file are one image: they are
    paired (distance 0) only when their patients differ, since several rows of one image
    (several lesions) of one patient are expected. Unreadable images are left out
    (``usmtl check`` reports them).

    Args:
        manifest: a :class:`~usmtl.data.manifest.Manifest` or a manifest path.
        max_distance: see :func:`near_duplicate_pairs`.
        hash_size: see :func:`hash_image`.
        progress: a progress bar while hashing.

    Returns:
        ``(i, j, distance)`` with ``i < j``, sorted.
    """
    manifest = as_manifest(manifest)
    manifest.require_image_files("the near-duplicate search (it hashes the whole images)")
    paths = manifest.image_paths()
    keys = [os.path.normcase(os.path.abspath(p)) for p in paths]
    files = list(dict.fromkeys(keys))
    rows_of: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        rows_of.setdefault(key, []).append(i)
    hashes, unreadable = _hash_files([paths[rows_of[f][0]] for f in files], hash_size,
                                     progress)
    bad = {k for k, _ in unreadable}
    readable = [k for k in range(len(files)) if k not in bad]
    patients = manifest.patient_ids()
    pairs = set()
    for a, b, d in near_duplicate_pairs(hashes[readable], max_distance):
        for i in rows_of[files[readable[a]]]:
            for j in rows_of[files[readable[b]]]:
                pairs.add((min(i, j), max(i, j), d))
    for rows in rows_of.values():
        for x, i in enumerate(rows):
            for j in rows[x + 1:]:
                if patients[i] != patients[j]:
                    pairs.add((i, j, 0))
    return sorted(pairs)


def _row_splits(manifest, splits) -> np.ndarray:
    """Each row's split name ('' when unknown) from ``splits`` or the ``split`` column."""
    from usmtl.data.manifest import _cell

    n = len(manifest)
    if splits is None:
        if not manifest.has_column("split"):
            return np.array([""] * n, dtype=object)
        return np.array([_cell(v) for v in manifest.frame["split"]], dtype=object)
    if isinstance(splits, dict):
        return np.array([str(splits.get(p, "")) for p in manifest.patient_ids()], dtype=object)
    values = np.array([_cell(v) for v in splits], dtype=object)
    if len(values) != n:
        raise UsmtlError(f"splits must give one value per manifest row ({n}). "
                         f"Received: {len(values)} values")
    return values


def duplicate_report(manifest, splits=None, max_distance: int = DEFAULT_MAX_DISTANCE,
                     pairs: list | None = None, progress: bool = False) -> pd.DataFrame:
    """Near-duplicate image pairs of a manifest, the leaks first.

    ``kind`` is ``"across splits"`` when the two rows are in different known splits (the
    same picture on both sides of a split: leakage), else ``"across patients"`` when their
    patient ids differ (a split may separate them), else ``"same patient"`` (harmless: a
    patient stays in one split).

    Args:
        manifest: a :class:`~usmtl.data.manifest.Manifest` or a manifest path.
        splits: ``{patient_id: split}`` (:func:`usmtl.data.splits.load_split`), or one
            value per row; default: the manifest's ``split`` column, if any.
        max_distance: see :func:`near_duplicate_pairs`.
        pairs: pairs already found by :func:`manifest_pairs` (not hashed again).
        progress: a progress bar while hashing.

    Returns:
        A frame with the columns ``REPORT_COLUMNS``: ``line_a``/``line_b`` are manifest
        lines, ``image_a``/``image_b`` the ``image`` cells, sorted by kind, then distance.

    Raises:
        UsmtlError: ``splits`` is a sequence of the wrong length.

    Example:
        >>> from usmtl.data.duplicates import duplicate_report
        >>> report = duplicate_report("manifest.csv")  # doctest: +SKIP
        >>> report[report["across_splits"]][["line_a", "line_b", "distance"]]  # doctest: +SKIP
    """
    manifest = as_manifest(manifest)
    if pairs is None:
        pairs = manifest_pairs(manifest, max_distance, progress=progress)
    split_of = _row_splits(manifest, splits)
    patients = manifest.patient_ids()
    images = manifest.frame["image"].astype(str).tolist()
    records = []
    for i, j, d in pairs:
        across_patients = bool(patients[i] != patients[j])
        across_splits = bool(split_of[i] and split_of[j] and split_of[i] != split_of[j])
        kind = (ACROSS_SPLITS if across_splits else
                ACROSS_PATIENTS if across_patients else SAME_PATIENT)
        records.append({
            "kind": kind, "distance": int(d),
            "line_a": manifest.line(i), "image_a": images[i], "patient_a": patients[i],
            "split_a": split_of[i],
            "line_b": manifest.line(j), "image_b": images[j], "patient_b": patients[j],
            "split_b": split_of[j],
            "across_patients": across_patients, "across_splits": across_splits,
        })
    report = pd.DataFrame(records, columns=list(REPORT_COLUMNS))
    if len(report):
        rank = report["kind"].map({k: n for n, k in enumerate(KINDS)})
        report = (report.assign(_rank=rank)
                  .sort_values(["_rank", "distance", "line_a", "line_b"], kind="stable")
                  .drop(columns="_rank").reset_index(drop=True))
    return report


def report_counts(report: pd.DataFrame) -> dict[str, int]:
    """Pair counts: ``pairs``, ``across_patients`` (leaks across splits included),
    ``across_splits`` and ``same_patient``."""
    return {"pairs": int(len(report)),
            "across_patients": int(report["across_patients"].sum()),
            "across_splits": int(report["across_splits"].sum()),
            "same_patient": int((report["kind"] == SAME_PATIENT).sum())}


def format_pairs(report: pd.DataFrame, limit: int = 10, kinds=(ACROSS_SPLITS, ACROSS_PATIENTS)
                 ) -> list[str]:
    """Terminal lines for the first ``limit`` pairs of the ``kinds`` asked, e.g.
    ``across splits: line 3 a.png (patient p1, train) ~ line 7 b.jpg (patient p2, test):
    distance 4``, and a last line counting those left out."""
    shown = report[report["kind"].isin(kinds)]

    def side(row, s):
        split = f", {row[f'split_{s}']}" if row[f"split_{s}"] else ""
        return (f"line {row[f'line_{s}']} {row[f'image_{s}']} "
                f"(patient {row[f'patient_{s}']}{split})")

    lines = [f"{row['kind']}: {side(row, 'a')} ~ {side(row, 'b')}: distance {row['distance']}"
             for _, row in shown.head(limit).iterrows()]
    if len(shown) > limit:
        lines.append(f"... and {len(shown) - limit} more")
    return lines


def group_patients(frame: pd.DataFrame, pairs: Iterable[Sequence[int]]) -> pd.DataFrame:
    """A copy of a manifest frame where the patients of near-duplicate rows share one id.

    Patients joined by any pair (directly or through others) become one group whose id is
    the first of them in the frame, followed by ``+K`` (K the number of other patients
    merged into it), e.g. ``busi-benign-3+1``. The original id stays in
    ``source_patient_id`` (kept as it is when the frame already has that column), so a
    split (:mod:`usmtl.data.splits`) or the patient bootstrap, which both go by
    ``patient_id``, keep the near-duplicates together.

    Args:
        frame: manifest rows with a ``patient_id`` column.
        pairs: ``(i, j[, distance])`` row positions (:func:`manifest_pairs`).

    Returns:
        The new frame; its ``patient_id`` has one value per group.

    Raises:
        UsmtlError: the frame has no ``patient_id`` column.

    Example:
        >>> import pandas as pd
        >>> from usmtl.data.duplicates import group_patients
        >>> frame = pd.DataFrame({"image": ["a", "b", "c"], "patient_id": ["p1", "p2", "p3"]})
        >>> group_patients(frame, [(0, 2, 3)])["patient_id"].tolist()
        ['p1+1', 'p2', 'p1+1']
    """
    if "patient_id" not in frame.columns:
        raise UsmtlError(f"group_patients needs a 'patient_id' column. "
                         f"Received columns: {list(frame.columns)}")
    out = frame.reset_index(drop=True).copy()
    ids = out["patient_id"].astype(str).tolist()
    patients = list(dict.fromkeys(ids))
    index = {p: k for k, p in enumerate(patients)}
    groups = duplicate_groups([(index[ids[p[0]]], index[ids[p[1]]]) for p in pairs],
                              len(patients))
    new_id = {}
    for group in groups:
        first = patients[group[0]]
        for k in group:
            new_id[patients[k]] = f"{first}+{len(group) - 1}"
    if "source_patient_id" not in out.columns:
        out.insert(out.columns.get_loc("patient_id") + 1, "source_patient_id", out["patient_id"])
    out["patient_id"] = [new_id.get(p, p) for p in ids]
    return out


def rebase_paths(frame: pd.DataFrame, from_root: str, out: str) -> pd.DataFrame:
    """Relative ``image``, ``mask`` and ``annotation`` cells re-written relative to the
    folder of ``out``, so that a manifest copy written elsewhere still finds its files."""
    frame = frame.copy()
    to_root = os.path.dirname(os.path.abspath(out))
    for column in PATH_COLUMNS:
        if column in frame.columns:
            frame[column] = [
                v if not str(v).strip() or os.path.isabs(str(v).strip())
                else os.path.relpath(os.path.join(from_root, str(v).strip()), to_root)
                for v in frame[column]]
    return frame


def write_grouped_manifest(manifest, pairs, out: str) -> pd.DataFrame:
    """Write a copy of ``manifest`` (:func:`group_patients` applied, paths rebased to the
    folder of ``out``) atomically; returns the frame written.

    Raises:
        UsmtlError: ``out`` is the manifest itself (it would be overwritten).
    """
    from usmtl.data.manifest import write_manifest

    manifest = as_manifest(manifest)
    if os.path.abspath(out) == manifest.path:
        raise UsmtlError(f"Write the grouped manifest to another file than the manifest itself. "
                         f"Received: {out}")
    frame = rebase_paths(group_patients(manifest.frame, pairs), manifest.root, out)
    write_manifest(frame, out)
    return frame
