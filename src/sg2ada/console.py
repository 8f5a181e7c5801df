"""Console text shared by training and the metrics: NVIDIA's compact elapsed-time format
(dnnlib.util.format_time), used in training's status lines and in a metric result's total_time_str.
"""


def format_time(seconds: float) -> str:
    """`42s`, `3m 07s`, `2h 05m 09s`, `1d 02h 03m`."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 60 * 60:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 24 * 60 * 60:
        return f"{s // 3600}h {(s // 60) % 60:02d}m {s % 60:02d}s"
    return f"{s // 86400}d {(s // 3600) % 24:02d}h {(s // 60) % 60:02d}m"


__all__ = ["format_time"]
