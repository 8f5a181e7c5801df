"""Writing frame sequences as animated GIF (Pillow, always available) or MP4 (imageio + imageio-ffmpeg,
optional: `pip install imageio imageio-ffmpeg`). The format follows the file extension.

MP4 frames must have even width and height for yuv420p H.264; odd sizes are padded by one black
row/column rather than rescaled, so pixels stay exactly as generated.
"""

from __future__ import annotations

import os

import numpy as np

from sg2ada.errors import UserError

FORMATS = (".gif", ".mp4")


def check_video_path(path: str) -> str:
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in FORMATS:
        raise UserError(f"{path}: unknown video format {ext or '(no extension)'!r}; use .gif or .mp4")
    if ext == ".mp4":
        require_mp4()
    return ext


def require_mp4():
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise UserError("writing .mp4 needs imageio and imageio-ffmpeg (pip install imageio imageio-ffmpeg); "
                        "or write a .gif instead") from None


def _even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    out = np.zeros([h + h % 2, w + w % 2] + list(frame.shape[2:]), frame.dtype)
    out[:h, :w] = frame
    return out


def write_video(frames, path: str, fps: float = 30, bitrate: str = "16M") -> int:
    """Write uint8 HWC frames (any iterable) to `path`; returns the number of frames written."""
    from sg2ada.images import pil_image

    ext = check_video_path(path)
    if fps <= 0:
        raise UserError(f"--fps {fps}: must be positive")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    count = 0
    try:
        if ext == ".gif":
            images = [pil_image(np.asarray(f, np.uint8)) for f in frames]
            if not images:
                raise UserError(f"{path}: no frames to write")
            # GIF delays are whole centiseconds; loop=0 repeats forever.
            images[0].save(path, save_all=True, append_images=images[1:], duration=max(2, round(1000 / fps)),
                           loop=0, optimize=False)
            return len(images)
        import imageio

        writer = imageio.get_writer(path, mode="I", fps=fps, codec="libx264", bitrate=bitrate,
                                    macro_block_size=1)
        try:
            for f in frames:
                f = np.asarray(f, np.uint8)
                if f.ndim == 3 and f.shape[-1] == 1:
                    f = np.repeat(f, 3, axis=-1)
                writer.append_data(_even(f))
                count += 1
        finally:
            writer.close()
    except OSError as e:
        raise UserError(f"{path}: cannot write the video ({e.strerror or e})") from None
    return count


__all__ = ["FORMATS", "check_video_path", "require_mp4", "write_video"]
