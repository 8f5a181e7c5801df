"""Image decoding, colour-mode normalisation, crop/resize transforms and encoding for the dataset tool.

Everything here works on one image at a time and is thread-safe, so the tool can run it in a thread
pool (Pillow releases the GIL while decoding, resizing and encoding). A problem with one image is
raised as `SkipImage(reason)`; the caller records it against the file name and carries on.
Conversions that change the pixels (EXIF orientation, grayscale->RGB, alpha compositing, 16-bit
scaling, downscaled decoding, resizing) are returned as short notes so the dataset report can say
what was done to which file.

Size policy (replacing PIL's process-wide 89.5 MP bomb limit, which would drop ordinary 100 MP
photos): an image above LARGE_IMAGE_PIXELS is decoded downscaled to DOWNSCALE_MARGIN times the
output size per side (JPEG: DCT scaling inside the decoder; other formats: an integer box reduce
right after decoding), one such decode at a time; an image that would still decode to more than
MAX_DECODE_PIXELS is refused unread (a decompression bomb, or absurdly large).
"""

from __future__ import annotations

import contextlib
import io
import struct
import threading
from dataclasses import dataclass

import numpy as np
import PIL.Image

# The formats the tool reads from folders and zips (the list plus GIF, which Pillow reads
# the same way). Anything else found in a source is reported as "not an image file".
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif")

# Modes that carry no colour: they become RGB by replication when the dataset is RGB.
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}

RESIZE_FILTERS = {"lanczos": PIL.Image.Resampling.LANCZOS, "box": PIL.Image.Resampling.BOX}
TRANSFORMS = (None, "center-crop", "center-crop-wide")

LARGE_IMAGE_PIXELS = 2**24  # 16.8 MP: above this, decode downscaled and one at a time
MAX_DECODE_PIXELS = 2**28  # 268 MP (0.8 GB as RGB) decoded at most; a 100-150 MP TIFF or PNG still fits
DOWNSCALE_MARGIN = 2  # a downscaled decode keeps at least this many times the output size per side

EXIF_NOTE = "EXIF orientation"  # the note that marks an image turned upright (counted in the report)
_ORIENTATION_TAG = 0x0112
# EXIF orientation value -> the transpose that makes the picture upright, and what it means.
_UPRIGHT = {
    2: (PIL.Image.Transpose.FLIP_LEFT_RIGHT, "mirrored"),
    3: (PIL.Image.Transpose.ROTATE_180, "rotated 180"),
    4: (PIL.Image.Transpose.FLIP_TOP_BOTTOM, "flipped upside down"),
    5: (PIL.Image.Transpose.TRANSPOSE, "mirrored and rotated 90 counter-clockwise"),
    6: (PIL.Image.Transpose.ROTATE_270, "rotated 90 clockwise"),
    7: (PIL.Image.Transpose.TRANSVERSE, "mirrored and rotated 90 clockwise"),
    8: (PIL.Image.Transpose.ROTATE_90, "rotated 90 counter-clockwise"),
}

_large_decodes = threading.Semaphore(1)  # bounds memory: one image above LARGE_IMAGE_PIXELS at a time
_pil_limit_lock = threading.Lock()
_pil_limit_users = 0
_pil_limit_saved = None


class SkipImage(Exception):
    """This image cannot go into the dataset; the message says why (one line)."""


@dataclass(frozen=True)
class Spec:
    """What every output image must look like. `resolution` None keeps the source size (which must
    then be the dataset's common size, `size`); `wide_height` is the picture height inside the
    square canvas for center-crop-wide."""

    channels: int
    resolution: int | None = None
    size: tuple[int, int] | None = None  # (width, height) expected when resolution is None
    transform: str | None = None
    resize_filter: str = "lanczos"
    wide_height: int | None = None


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


@contextlib.contextmanager
def _pil_limit_lifted():
    """PIL's bomb limit is a process-wide setting; it is off while any thread here decodes (this
    module's size policy replaces it) and restored when the last one finishes."""
    global _pil_limit_users, _pil_limit_saved
    with _pil_limit_lock:
        if _pil_limit_users == 0:
            _pil_limit_saved, PIL.Image.MAX_IMAGE_PIXELS = PIL.Image.MAX_IMAGE_PIXELS, None
        _pil_limit_users += 1
    try:
        yield
    finally:
        with _pil_limit_lock:
            _pil_limit_users -= 1
            if _pil_limit_users == 0:
                PIL.Image.MAX_IMAGE_PIXELS = _pil_limit_saved


def _orientation(img: PIL.Image.Image, decoded: bool) -> int | None:
    """The EXIF orientation (1 = upright), or None while it cannot be known without decoding (PIL
    decodes a whole PNG to look for an eXIf chunk placed after the pixels)."""
    if img.format == "PNG" and "exif" not in img.info and not decoded:
        return None
    try:
        value = int(img.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - a damaged EXIF block is ignored, as viewers do
        return 1
    return value if value in _UPRIGHT else 1


def open_image(data: bytes, keep_side: int | None = None, notes: list[str] | None = None) -> PIL.Image.Image:
    """Decode encoded bytes fully (so truncation is detected here, not later), upright.

    With `keep_side`, an image above LARGE_IMAGE_PIXELS is decoded downscaled, to no less than
    DOWNSCALE_MARGIN * keep_side pixels per side. Conversions are appended to `notes`."""
    notes = [] if notes is None else notes
    try:
        with _pil_limit_lifted():
            img = PIL.Image.open(io.BytesIO(data))
            stored_orientation = _orientation(img, decoded=False)
            w, h = img.size
            target = DOWNSCALE_MARGIN * keep_side if keep_side and w * h > LARGE_IMAGE_PIXELS else None
            if target and img.format == "JPEG":
                img.draft(img.mode, (target, target))  # 1/2, 1/4 or 1/8 scale, never below target
            if img.size[0] * img.size[1] > MAX_DECODE_PIXELS:
                raise SkipImage(f"declares {w}x{h} pixels, more than the {MAX_DECODE_PIXELS / 1e6:.0f} MP this tool "
                                "decodes (a decompression bomb, or absurdly large); not decoded")
            large = img.size[0] * img.size[1] > LARGE_IMAGE_PIXELS
            with _large_decodes if large else contextlib.nullcontext():
                img.load()
                orientation = _orientation(img, decoded=True)  # recent PIL turns a TIFF upright itself
                if target:
                    factor = min(img.size[0] // target, img.size[1] // target)
                    if factor >= 2:
                        img = img.reduce(factor)
    except PIL.UnidentifiedImageError:
        raise SkipImage("not a decodable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SkipImage(f"corrupt or truncated image ({msg})") from None
    if img.size != (w, h):
        notes.append(f"decoded downscaled {w}x{h}->{img.size[0]}x{img.size[1]} (large image)")
    if orientation != 1:
        img = img.transpose(_UPRIGHT[orientation][0])
    else:
        orientation = stored_orientation or 1
    if orientation != 1:
        notes.append(f"{EXIF_NOTE} {orientation} applied ({_UPRIGHT[orientation][1]})")
    return img


def probe(data_or_stream) -> tuple[str, tuple[int, int]] | None:
    """(mode, (width, height)) as displayed (EXIF orientation applied) from the header only, or None
    when it cannot be read."""
    try:
        src = io.BytesIO(data_or_stream) if isinstance(data_or_stream, (bytes, bytearray)) else data_or_stream
        with _pil_limit_lifted(), PIL.Image.open(src) as img:
            # The stored size: recent PIL reports a TIFF's size already turned upright.
            w, h = (img.tag_v2[256], img.tag_v2[257]) if img.format == "TIFF" else img.size
            return img.mode, ((h, w) if _orientation(img, decoded=False) in (5, 6, 7, 8) else (w, h))
    except Exception:  # the full decode later reports the exact problem for this file
        return None


def _scale_to_uint8(img: PIL.Image.Image, notes: list[str]) -> PIL.Image.Image:
    """Bring 16/32-bit integer and float grayscale to 8 bits by scaling, not by clipping."""
    arr = np.asarray(img)
    if img.mode == "F":
        hi = float(np.nanmax(arr)) if arr.size else 0.0
        scale = 255.0 if hi <= 1.0 else (255.0 / 65535.0 if hi > 255.0 else 1.0)
        notes.append("float->8-bit (scaled)")
    else:
        # Pillow opens 16-bit PNG/TIFF as I;16* or I with values 0..65535.
        hi = int(arr.max()) if arr.size else 0
        scale = 255.0 / 65535.0 if (img.mode.startswith("I;16") or hi > 255) else 1.0
        notes.append("16-bit->8-bit (scaled)" if scale != 1.0 else "32-bit int->8-bit")
    out = np.clip(np.rint(arr.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    return PIL.Image.fromarray(out, "L")


def _composite(img: PIL.Image.Image, notes: list[str], what: str) -> PIL.Image.Image:
    """Flatten transparency over black: transparent pixels contribute nothing, like premultiplied
    colour. (NVIDIA's tools reject 4-channel images; dropping alpha would expose whatever colour
    the editor left under transparent pixels.)"""
    rgba = img.convert("RGBA")
    arr = np.asarray(rgba).astype(np.float32)
    rgb = arr[..., :3] * (arr[..., 3:4] / 255.0)
    notes.append(f"{what}->RGB (alpha composited over black)")
    return PIL.Image.fromarray(np.rint(rgb).astype(np.uint8), "RGB")


def normalize_mode(img: PIL.Image.Image, channels: int, notes: list[str]) -> PIL.Image.Image:
    """Return an 'L' (channels=1) or 'RGB' (channels=3) image, noting any conversion."""
    mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        img = _scale_to_uint8(img, notes)
        mode = "L"
    elif mode == "1":
        img = img.convert("L")
        mode = "L"
    elif mode == "P":
        if "transparency" in img.info:
            img = _composite(img, notes, "palette+alpha")
        else:
            img = img.convert("RGB")
            notes.append("palette->RGB")
        mode = "RGB"
    elif mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        img = _composite(img, notes, mode)
        mode = "RGB"
    elif mode not in ("L", "RGB"):
        try:
            img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX
        except (ValueError, OSError) as e:
            raise SkipImage(f"unsupported colour mode {mode} ({e})") from None
        notes.append(f"{mode}->RGB")
        mode = "RGB"

    if channels == 3 and mode == "L":
        img = img.convert("RGB")
        notes.append("grayscale->RGB")
    elif channels == 1 and mode == "RGB":
        img = img.convert("L")  # ITU-R 601 luma, as Pillow and NVIDIA's --img-format=L
        notes.append("RGB->grayscale")
    return img


def apply_transform(img: PIL.Image.Image, spec: Spec, notes: list[str]) -> PIL.Image.Image:
    """Crop/resize one 'L'/'RGB' image to the dataset's square size."""
    w, h = img.size
    resample = RESIZE_FILTERS[spec.resize_filter]
    r = spec.resolution
    if spec.transform == "center-crop":
        crop = min(w, h)
        if (w, h) != (crop, crop):
            left, top = (w - crop) // 2, (h - crop) // 2
            img = img.crop((left, top, left + crop, top + crop))
            notes.append(f"center-cropped {w}x{h}->{crop}x{crop}")
        if r is not None and crop != r:
            img = img.resize((r, r), resample)
            notes.append(f"resized {crop}x{crop}->{r}x{r}")
    elif spec.transform == "center-crop-wide":
        assert r is not None and spec.wide_height is not None
        hh = spec.wide_height
        ch = int(round(r * h / w))  # the picture's height once scaled to the canvas width
        if w < r or ch < hh:
            raise SkipImage(f"too small for center-crop-wide {r}x{hh} ({w}x{h})")
        # Crop rows so that, scaled to width r, the picture is exactly hh tall.
        crop_h = int(round(hh * w / r))
        top = (h - crop_h) // 2
        img = img.crop((0, top, w, top + crop_h)).resize((r, hh), resample)
        canvas = PIL.Image.new(img.mode, (r, r))
        canvas.paste(img, (0, (r - hh) // 2))
        img = canvas
        notes.append(f"center-crop-wide {w}x{h}->{r}x{hh} on a {r}x{r} canvas")
    elif r is not None:
        if (w, h) != (r, r):
            img = img.resize((r, r), resample)
            what = "" if w == h else " (aspect changed; use --transform center-crop to keep it)"
            notes.append(f"resized {w}x{h}->{r}x{r}{what}")
    else:
        if spec.size is not None and (w, h) != tuple(spec.size):
            sw, sh = spec.size
            raise SkipImage(
                f"size {w}x{h} differs from the dataset's {sw}x{sh} (pass --resolution to resize)"
            )
    return img


def process(src, spec: Spec) -> tuple[np.ndarray, list[str]]:
    """Encoded bytes, a PIL image or a uint8 array [H,W] / [H,W,C] -> (uint8 [R,R,C], notes)."""
    notes: list[str] = []
    if isinstance(src, np.ndarray) and src.dtype == np.uint8 and spec.transform is None:
        arr = src[:, :, None] if src.ndim == 2 else src
        h, w = arr.shape[:2]
        if arr.ndim == 3 and arr.shape[2] == spec.channels and (
            (spec.resolution is None and (spec.size is None or tuple(spec.size) == (w, h)))
            or (spec.resolution == w == h)
        ):
            return np.ascontiguousarray(arr), notes  # already what we need: skip the PIL round trip
    if isinstance(src, (bytes, bytearray, memoryview)):
        img = open_image(bytes(src), keep_side=spec.resolution, notes=notes)
    elif isinstance(src, np.ndarray):
        img = array_to_image(src)
    else:
        img = src
    img = normalize_mode(img, spec.channels, notes)
    img = apply_transform(img, spec, notes)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr), notes


def array_to_image(arr: np.ndarray) -> PIL.Image.Image:
    if arr.dtype != np.uint8:
        raise SkipImage(f"unsupported pixel type {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return PIL.Image.fromarray(arr, "L")
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return PIL.Image.fromarray(arr, "RGB" if arr.shape[2] == 3 else "RGBA")
    raise SkipImage(f"unsupported array shape {arr.shape}")


def encode_png(arr: np.ndarray, compress_level: int = 1) -> bytes:
    """Fast PNG: level 1 deflate is several times quicker to write than the default and decodes
    as fast; the files are far smaller than NVIDIA's level 0."""
    img = PIL.Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr, "L" if arr.shape[2] == 1 else "RGB")
    buf = io.BytesIO()
    img.save(buf, format="png", compress_level=compress_level)
    return buf.getvalue()


def is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0
