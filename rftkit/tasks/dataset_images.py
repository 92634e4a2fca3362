"""Images in the rows of the "dataset" task: reading, converting and resizing them.

A row's images sit in one column: `images` or `image` (the first the row has) unless
`columns: {images: <column>}` names another, or `images: null` ignores them. A cell holds
one image or a list of them (a `Problem`'s images, in order); null, "" and [] mean none.
An image is any of:

    a path           "img/3.png": relative to the folder holding the dataset file (or the
                     `datasets` folder; the working directory for hub names); "file://" and
                     "~" are understood; http(s) URLs are refused: nothing is downloaded
    a data URL       "data:image/png;base64,..." (an image inline in JSON)
    bytes            the encoded file (PNG, JPEG, WebP, ...), e.g. a Parquet binary column
    {bytes, path}    how the `datasets` Image feature stores an image (in its Parquet and
                     Arrow files): the bytes when set, else the path
    a PIL image      rows built in Python (a reader of your own); `datasets` folders and hub
                     names are read undecoded, as {bytes, path}, so their bad images are row errors

Conversions to RGB uint8 [H, W, 3], documented rather than errors (each counted by the
source's Pillow mode in the task's report, `images.converted`):
- EXIF orientation is applied (a phone photo stands upright), as `datasets` and
  transformers' `load_image` do; an animation gives its first frame.
- Alpha (RGBA, LA, PA, or a palette/colour image with a transparent colour) is composited
  on white: c' = round((c * a + 255 * (255 - a)) / 255). vLLM and qwen-vl-utils do the
  same; dropping alpha would show whatever colour transparent pixels store (often black,
  which hides a black drawing on a transparent background).
- Grayscale (L, 1) is repeated into three channels; a palette (P) is expanded; CMYK, YCbCr
  and other colour modes go through Pillow's `convert("RGB")`.
- 16-bit (I;16*, and I, which is how Pillow opens some 16-bit files): v' = round(v * 255 / 65535),
  v clipped to 0..65535 (Pillow's own conversion clips at 255 instead of scaling). Float (F)
  images are read as values in [0, 1], like `Image(array)`; others are an error.
An image whose long side exceeds the task's `max_image_size` (default 512; null: no limit)
is resized to that long side, aspect kept (the short side rounded, at least 1 px), bicubic
(Pillow antialiases when shrinking); JPEGs decode at a reduced scale first (`draft`), which
makes large photos quick. The first resize of a task is logged; all are counted
(`images.resized`).

Row errors (`RowError` naming field 'images' and, when it differs, the column) for: a
missing file, a folder, a URL, a bad data URL, an undecodable or truncated image, a wrong
type, a dict without bytes or path; "image 2 of 3: ..." in a list. Pillow is imported only when a row has an image, so
text-only datasets never load it; without Pillow an image row is a `DatasetError` saying
`pip install 'rftkit[vision]'`. Memory: images are decoded when the file is read and kept
(H * W * 3 bytes each, at most 768 KiB at the default size), like the rest of the rows.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from rftkit.tasks.dataset_task import DatasetError, RowError, _get
from rftkit.types import Image, Problem, as_rgb

MAX_IMAGE_SIZE = 512
CHAR_IMAGE_TOKENS = 16  # the built-in VLM's default encoder: (vision.image_size / vision.patch)^2 = (32 / 8)^2
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
SIXTEEN_BIT = ("I", "I;16", "I;16L", "I;16B", "I;16N")
EXIF_ORIENTATION = 0x0112
log = logging.getLogger("rftkit.tasks")


def char_tokens(problem: Problem) -> int:
    """A prompt's length for the built-in model's character tokenizer: bos + one id per character,
    and CHAR_IMAGE_TOKENS per image (the "dataset" task's measure when no tokenizer is given)."""
    return 1 + len(problem.prompt) + CHAR_IMAGE_TOKENS * len(problem.images)


class RowImages:
    """The "dataset" task's image reader: a row's cell -> the Problem's images; counts what it did
    (`read`, `resized`, `converted`: {source Pillow mode: n})."""

    def __init__(self, max_size: int | None = MAX_IMAGE_SIZE) -> None:
        if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1):
            raise DatasetError(f"max_image_size must be a positive integer (pixels on the long side) or null, "
                               f"got {max_size!r}")
        self.max_size, self.read, self.resized, self.converted = max_size, 0, 0, {}

    def counts(self) -> dict[str, Any]:
        return {"read": self.read, "resized": self.resized, "converted": dict(self.converted)}

    def attach(self, problem: Problem, rec: dict[str, Any], cols: dict[str, Any], path: str, fmt: str,
               row: int) -> Problem:
        """`problem` with its row's images (unchanged when it has none); RowError on a bad image.
        Relative paths are resolved against the folder holding `path` (the working directory for
        fmt "hub")."""
        col = cols.get("images")
        if isinstance(col, tuple):  # unmapped: the first default column the row has (a loop: text rows stay fast)
            for c in col:
                if c in rec:
                    col, value = c, rec[c]
                    break
            else:
                return problem
        else:  # a mapped column must exist; None with `images: null`
            value = _get(rec, cols, "images")
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if value is None or not items or (isinstance(value, str) and not value.strip()):
            return problem
        pil = _pil(path, col)
        base = Path.cwd() if fmt == "hub" else Path(path.split("#", 1)[0]).parent
        images = []
        for i, item in enumerate(items):
            try:
                arr, size0, mode = _read(pil, item, base, self.max_size)
            except ValueError as e:
                at = f"image {i + 1} of {len(items)}: " if len(items) > 1 else ""
                raise RowError("images", col, at + str(e)) from None
            self._count(arr, size0, mode, path, row)
            images.append(Image(arr))
        return replace(problem, images=tuple(images))

    def _count(self, arr: np.ndarray, size0: tuple[int, int], mode: str, path: str, row: int) -> None:
        self.read += 1
        if mode != "RGB":
            self.converted[mode] = self.converted.get(mode, 0) + 1
        if self.max_size and max(size0) > self.max_size:
            self.resized += 1
            if self.resized == 1:
                log.warning("%s: row %d: an image of %dx%d (width x height) resized to %dx%d (max_image_size: %s); "
                            "further resizes are counted in the task's report", path, row, *size0, arr.shape[1],
                            arr.shape[0], self.max_size)


def _pil(path: str, col: str):
    try:
        import PIL.Image
        import PIL.ImageOps
    except ImportError:
        raise DatasetError(f"{path}: column '{col}' holds images; reading them needs Pillow: "
                           "pip install 'rftkit[vision]'") from None
    return PIL


def _read(pil, item: Any, base: Path, max_size: int | None) -> tuple[np.ndarray, tuple[int, int], str]:
    """One cell item -> (RGB uint8 [H, W, 3], its size (W, H) as stored, its Pillow mode); ValueError says why."""
    if isinstance(item, dict):
        if not item.keys() <= {"bytes", "path"} or (item.get("bytes") is None and item.get("path") is None):
            got = {k: type(v).__name__ for k, v in item.items()}
            raise ValueError(f"an image dict holds 'bytes' or 'path' (how `datasets` stores an Image), got {got}")
        item = item["bytes"] if item.get("bytes") is not None else item["path"]
    if isinstance(item, (bytes, bytearray, memoryview)):
        return _decode(pil, io.BytesIO(bytes(item)), f"{len(item)} bytes of image data", max_size)
    if isinstance(item, str):
        if item.startswith("data:"):
            return _decode(pil, io.BytesIO(_data_url(item)), "the data URL", max_size)
        return _decode(pil, _local(item, base), f"'{item}'", max_size)
    if isinstance(item, pil.Image.Image):  # already opened: no draft, the caller keeps it open
        try:
            item.load()
        except Exception as e:  # a lazily opened image fails here as a file does in _decode
            raise ValueError(f"cannot read the PIL image: {_why(pil, e)}") from None
        return _pixels(pil, item, item.size, max_size)
    raise ValueError(f"expected an image path, bytes, a {{'bytes', 'path'}} dict or a PIL image (or a list of "
                     f"them), got {type(item).__name__} {str(item)[:60]!r}")


def _local(item: str, base: Path) -> Path:
    if item.startswith(("http://", "https://")):
        raise ValueError(f"'{item[:80]}' is a URL; images are not downloaded while data is read: download them "
                         "and give local paths")
    p = Path(item.removeprefix("file://")).expanduser()
    p = p if p.is_absolute() else base / p
    if not p.is_file():
        looked = f" (looked for {p})" if str(p) != item else ""
        raise ValueError(f"cannot read '{item}': {'a folder, not a file' if p.is_dir() else 'file not found'}{looked}")
    return p


def _data_url(item: str) -> bytes:
    head, _, data = item.partition(",")
    if not head.endswith(";base64"):
        raise ValueError(f"a data URL should be 'data:image/<type>;base64,<data>', got {item[:40]!r}...")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the data URL's base64 does not decode") from None


def _decode(pil, src, name: str, max_size: int | None) -> tuple[np.ndarray, tuple[int, int], str]:
    try:
        with pil.Image.open(src) as im:
            size0 = im.size
            if max_size and max(size0) > max_size:
                im.draft(None, _fit(size0, max_size))  # JPEG: decode at 1/2, 1/4 or 1/8 scale, still >= the target
            im.load()
            return _pixels(pil, im, size0, max_size)
    except ValueError as e:
        raise ValueError(f"cannot read {name}: {e}") from None
    except Exception as e:  # a bad file makes Pillow raise OSError, SyntaxError, EOFError, struct.error, ...
        raise ValueError(f"cannot read {name}: {_why(pil, e)}") from None


def _why(pil, e: Exception) -> str:
    if isinstance(e, pil.UnidentifiedImageError):
        return "not an image Pillow can read (unknown format, or a corrupt header)"
    if isinstance(e, pil.Image.DecompressionBombError):
        return f"too many pixels to decode safely ({e})"
    return f"corrupt or unreadable image ({type(e).__name__}: {e})"


def _fit(size: tuple[int, int], max_size: int) -> tuple[int, int]:
    """(W, H) scaled so the long side is max_size, aspect kept."""
    scale = max_size / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _pixels(pil, im, size0: tuple[int, int], max_size: int | None) -> tuple[np.ndarray, tuple[int, int], str]:
    """A loaded PIL image -> (RGB uint8 [H, W, 3] upright, converted, resized; size0; its mode)."""
    mode = im.mode
    if im.getexif().get(EXIF_ORIENTATION, 1) != 1:
        im = pil.ImageOps.exif_transpose(im)
    arr = to_rgb(im)
    h, w = arr.shape[:2]
    if max_size and max(h, w) > max_size:
        resample = getattr(pil.Image, "Resampling", pil.Image).BICUBIC  # Pillow < 9.1 has no Resampling
        arr = np.asarray(pil.Image.fromarray(arr).resize(_fit((w, h), max_size), resample))
    return arr, size0, mode


def to_rgb(im) -> np.ndarray:
    """A loaded PIL image of any mode -> uint8 [H, W, 3] (the conversions of the module docstring)."""
    mode = im.mode
    if mode in ALPHA_MODES or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint32)
        c, a = rgba[..., :3], rgba[..., 3:]
        return ((c * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)  # on white, rounded
    if mode in SIXTEEN_BIT:
        v = np.clip(np.asarray(im, dtype=np.int64), 0, 65535)
        return as_rgb(((v * 255 + 32767) // 65535).astype(np.uint8))
    if mode == "F":
        return as_rgb(np.asarray(im, dtype=np.float32))  # [0, 1] scaled; ValueError outside
    return np.asarray(im if mode == "RGB" else im.convert("RGB"), dtype=np.uint8)

