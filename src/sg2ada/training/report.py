"""`sg2ada report`: one self-contained HTML page summarising a training run directory.

From what `sg2ada train` leaves in the run directory (training/run_dir.py, training/monitor.py):
`stats.jsonl` (loss curves; the augmentation probability p and the ADA paper's overfitting heuristic
r_t = E[sign(D(x_real))]; R1 and path-length penalties; `Health/` numbers), `metric-<name>.jsonl`
(metric curves over the snapshots' kimg), `log.txt` (`warning:` lines, placed at the tick they follow),
the `fakes*.png` grids (a few, evenly spread over the run), `reals.png`, the memorisation metric's
nearest-neighbour picture, and `training_options.json` (the resolved configuration). Plots are made
with matplotlib's Agg canvas and embedded with every picture as base64 PNG data, so the page makes no
network request and can be mailed or archived as one file. Missing parts are skipped, so a run still
in progress (or a partial copy) reports what it has.
"""

from __future__ import annotations

import base64
import datetime
import glob
import html
import io
import json
import math
import os
import re

import numpy as np

from sg2ada.errors import UserError
from sg2ada.metrics.memorization import PICTURE_SUFFIX
from sg2ada.training.health import WARNING_PREFIX
from sg2ada.training.monitor import STATS_FILE
from sg2ada.training.run_dir import LOG_FILE, OPTIONS_FILE, atomic_write_text

__all__ = ["REPORT_FILE", "read_run", "write_report"]

REPORT_FILE = "report.html"
MAX_IMAGE_WIDTH = 1200  # pixels: a 7680-pixel fakes grid is shrunk so the page stays a few MB
MIN_IMAGE_WIDTH = 360  # pixels: a picture of a few 32x32 cells is enlarged (whole pixels) to be seen
GRID_ROWS = 6  # rows of cells shown per grid: enough to judge variety, a fraction of the bytes
_GRID = re.compile(r"^fakes(\d+)\.png$")
_SNAPSHOT_KIMG = re.compile(r"network-snapshot-(\d+)")
_TICK_LINE = re.compile(r"^tick\s+\d+\s+kimg\s+([0-9.]+)")
_WARNING_KIMG = re.compile(r"^kimg ([0-9.]+):\s*")


def _read_jsonl(path: str) -> list[dict]:
    """Every complete JSON object line (a run still writing may have a partial last line)."""
    rows = []
    if not os.path.isfile(path):
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


class RunData:
    """What a run directory holds, read once."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.name = os.path.basename(os.path.normpath(run_dir))
        self.stats = _read_jsonl(os.path.join(run_dir, STATS_FILE))
        path = os.path.join(run_dir, OPTIONS_FILE)
        self.options = None
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as f:
                    self.options = json.load(f)
            except ValueError:
                raise UserError(f"{path} is not readable JSON; restore it from a backup or delete it") from None
        self.metrics = {}
        for path in sorted(glob.glob(os.path.join(run_dir, "metric-*.jsonl"))):
            rows = _read_jsonl(path)
            if rows:
                self.metrics[os.path.basename(path)[len("metric-"): -len(".jsonl")]] = rows
        self.warnings = self._log_warnings()
        grids = []
        for fn in os.listdir(run_dir):
            m = _GRID.match(fn)
            if m:
                grids.append((int(m.group(1)), os.path.join(run_dir, fn)))
        self.grids = sorted(grids)
        init = os.path.join(run_dir, "fakes_init.png")
        self.grid_init = init if os.path.isfile(init) else None
        reals = os.path.join(run_dir, "reals.png")
        self.reals = reals if os.path.isfile(reals) else None
        self.nearest = sorted(glob.glob(os.path.join(run_dir, "*" + PICTURE_SUFFIX)))

    def series(self, name: str):
        """(kimg, tick means) of one statistic, over the ticks that report it."""
        ks, vs = [], []
        for row in self.stats:
            v, k = row.get(name), row.get("Progress/kimg")
            if isinstance(v, dict) and isinstance(k, dict) and v.get("mean") is not None:
                ks.append(float(k["mean"]))
                vs.append(float(v["mean"]))
        return np.array(ks), np.array(vs)

    def stat_names(self) -> list[str]:
        names = set()
        for row in self.stats:
            names.update(k for k, v in row.items() if isinstance(v, dict))
        return sorted(names)

    def _log_warnings(self) -> list[tuple[float | None, str]]:
        """(kimg, text) of every `warning:` line in log.txt; kimg from the line or the tick before it."""
        path = os.path.join(self.run_dir, LOG_FILE)
        out = []
        if not os.path.isfile(path):
            return out
        kimg = None
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                m = _TICK_LINE.match(line)
                if m:
                    kimg = float(m.group(1))
                elif line.startswith(WARNING_PREFIX):
                    text = line[len(WARNING_PREFIX):]
                    m = _WARNING_KIMG.match(text)
                    out.append((float(m.group(1)) if m else kimg, text[m.end():] if m else text))
        return out


def read_run(run_dir: str) -> RunData:
    if not os.path.isdir(run_dir):
        raise UserError(f"{run_dir}: no such directory; give a run directory made by sg2ada train")
    if not (os.path.isfile(os.path.join(run_dir, OPTIONS_FILE)) or os.path.isfile(os.path.join(run_dir, STATS_FILE))):
        raise UserError(f"{run_dir}: neither {OPTIONS_FILE} nor {STATS_FILE} is there; give a run directory made "
                        "by sg2ada train (runs/NNNNN-...)")
    return RunData(run_dir)


# ---------------------------------------------------------------------------------------------------
# Pictures


def _png_data(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(rows: int = 1, cols: int = 1, height: float = 3.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6 * cols, height * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas: no display, no pyplot state
    return fig


def _figure_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no tool URL in the PNG text chunks
    return _png_data(buf.getvalue())


def _image_data(path: str, max_height: int | None = None) -> str | None:
    """The picture as PNG data, its top `max_height` pixels only if given, at most MAX_IMAGE_WIDTH wide."""
    import PIL.Image

    try:
        with PIL.Image.open(path) as img:
            img = img.convert("RGB") if img.mode not in ("RGB", "L") else img.copy()
    except (OSError, ValueError):
        return None  # a half-written or damaged picture is left out, not fatal
    if max_height and img.height > max_height:
        img = img.crop((0, 0, img.width, max_height))
    if img.width > MAX_IMAGE_WIDTH:
        img = img.resize((MAX_IMAGE_WIDTH, max(1, round(img.height * MAX_IMAGE_WIDTH / img.width))), PIL.Image.BOX)
    elif img.width < MIN_IMAGE_WIDTH // 2:
        k = MIN_IMAGE_WIDTH // img.width
        img = img.resize((img.width * k, img.height * k), PIL.Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return _png_data(buf.getvalue())


def _plot_panels(run: RunData, panels) -> str | None:
    """panels: [(title, [(label, kimg, values, style)], hlines {label: y}, log)] -> one PNG, None if all empty."""
    panels = [p for p in panels if any(len(s[1]) for s in p[1])]
    if not panels:
        return None
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig = _figure(rows, cols)
    for i, (title, series, hlines, log) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for label, ks, vs, style in series:
            if len(ks):
                ax.plot(ks, vs, style, label=label, markersize=3)
        for label, y in (hlines or {}).items():
            ax.axhline(y, color="grey", linestyle="--", linewidth=1, label=label)
        if log and all((s[2] > 0).all() for s in series if len(s[2])):
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("kimg")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _figure_png(fig)


def _style(ks) -> str:
    return "-o" if len(ks) < 30 else "-"


def _loss_plot(run: RunData) -> str | None:
    def s(label, name):
        ks, vs = run.series(name)
        return (label, ks, vs, _style(ks))

    return _plot_panels(run, [
        ("losses", [s("G loss", "Loss/G/loss"), s("D loss", "Loss/D/loss")], None, False),
        ("D scores (logits)", [s("reals", "Loss/scores/real"), s("fakes", "Loss/scores/fake")], None, False),
        ("regularisation", [s("R1 penalty", "Loss/r1_penalty"), s("path length penalty", "Loss/pl_penalty")],
         None, True),
    ])


def _ada_plot(run: RunData) -> str | None:
    pk, pv = run.series("Progress/augment")
    rk, rv = run.series("Loss/signs/real")
    target = (run.options or {}).get("ada_target")
    hlines = {f"ADA target {target:g}": float(target)} if isinstance(target, (int, float)) else {}
    return _plot_panels(run, [
        ("augmentation probability p", [("p", pk, pv, _style(pk))], None, False),
        ("overfitting heuristic r_t", [("r_t", rk, rv, _style(rk))], hlines, False),
    ])


def _health_plot(run: RunData) -> str | None:
    panels = []
    for name in run.stat_names():
        if name.startswith("Health/"):
            ks, vs = run.series(name)
            panels.append((name, [(name.split("/", 1)[1], ks, vs, _style(ks))], None, False))
    return _plot_panels(run, panels)


def _metric_points(rows: list[dict]):
    """{result key: (x, values)}, x the snapshot's kimg (or the evaluation's order if unnamed)."""
    xs = []
    for row in rows:
        m = _SNAPSHOT_KIMG.search(str(row.get("snapshot_pkl") or ""))
        xs.append(float(m.group(1)) if m else math.nan)
    by_order = any(math.isnan(x) for x in xs)
    if by_order:
        xs = list(range(len(rows)))
    out: dict = {}
    for x, row in zip(xs, rows):
        for key, value in (row.get("results") or {}).items():
            if isinstance(value, (int, float)):
                out.setdefault(key, ([], []))
                out[key][0].append(x)
                out[key][1].append(float(value))
    return out, by_order


def _metric_plot(run: RunData) -> str | None:
    panels = []
    for name, rows in run.metrics.items():
        points, by_order = _metric_points(rows)
        series = [(key, np.array(x), np.array(v), "-o") for key, (x, v) in sorted(points.items())]
        panels.append((name + (" (by evaluation)" if by_order else ""), series, None, False))
    return _plot_panels(run, panels)


# ---------------------------------------------------------------------------------------------------
# The page

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1250px;color:#222;padding:0 1em}
h1{font-size:1.4em}h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse}td,th{padding:.2em .8em;border-bottom:1px solid #eee;text-align:left}
img{max-width:100%;image-rendering:pixelated}figure{margin:.6em 0}figcaption{color:#666;font-size:.9em}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em}.warn{color:#a40}.none{color:#777}
"""


def _last(run: RunData, name: str):
    _, vs = run.series(name)
    return float(vs[-1]) if len(vs) else None


def _summary_rows(run: RunData) -> list[tuple[str, str]]:
    rows = []
    opts = run.options or {}
    for label, key in (("dataset", "data"), ("preset", "cfg"), ("resolution", "resolution"),
                       ("augmentation", "aug"), ("R1 gamma", "r1_gamma"), ("batch", "batch_size"),
                       ("planned length (kimg)", "total_kimg")):
        if opts.get(key) is not None:
            rows.append((label, str(opts[key])))
    for label, name, fmt in (("kimg reached", "Progress/kimg", "{:g}"), ("ticks", "Progress/tick", "{:.0f}"),
                             ("training time (hours)", "Timing/total_hours", "{:.2f}"),
                             ("sec/kimg (last tick)", "Timing/sec_per_kimg", "{:.2f}"),
                             ("augmentation p (last)", "Progress/augment", "{:.3f}"),
                             ("r_t (last tick)", "Loss/signs/real", "{:.3f}")):
        v = _last(run, name)
        if v is not None:
            rows.append((label, fmt.format(v)))
    for evaluations in run.metrics.values():
        for key, value in (evaluations[-1].get("results") or {}).items():
            if isinstance(value, (int, float)):
                rows.append((f"{key} (last)", f"{value:.4g}"))
    return rows


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{body}\n"


def _img(data: str | None, caption: str) -> str:
    if data is None:
        return ""
    text = html.escape(caption)
    return f'<figure><img src="{data}" alt="{text}"><figcaption>{text}</figcaption></figure>'


def _plot_or_note(data: str | None, what: str, note: str) -> str:
    return _img(data, what) if data else f'<p class="none">{html.escape(note)}</p>'


def _pick_grids(run: RunData, count: int) -> list[tuple[str, str]]:
    """(caption, path) of the init grid and `count` grids evenly spread over the run, last included."""
    picks = []
    if run.grid_init:
        picks.append(("at initialisation", run.grid_init))
    if run.grids and count > 0:
        idx = sorted({round(i) for i in np.linspace(0, len(run.grids) - 1, min(count, len(run.grids)))})
        picks += [(f"kimg {run.grids[i][0]}", run.grids[i][1]) for i in idx]
    return picks


def render(run: RunData, grids: int = 4) -> str:
    parts = [f"<h1>Training run {html.escape(run.name)}</h1>",
             f'<p class="none">{html.escape(os.path.abspath(run.run_dir))} &middot; report written '
             f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}</p>"]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in _summary_rows(run))
    parts.append(_section("Summary", f"<table>{rows}</table>" if rows else '<p class="none">no statistics yet</p>'))
    parts.append(_section("Losses", _plot_or_note(_loss_plot(run), "losses", f"no {STATS_FILE} yet")))
    parts.append(_section("Augmentation and overfitting",
                          _plot_or_note(_ada_plot(run), "p and r_t", "p and r_t are not recorded")))
    parts.append(_section("Metrics", _plot_or_note(_metric_plot(run), "metrics",
                                                   "no metric-*.jsonl (the run used --metrics none)")))
    health = _health_plot(run)
    if run.warnings:
        items = "".join(f'<li class="warn">{"" if k is None else f"kimg {k:g}: "}{html.escape(t)}</li>'
                        for k, t in run.warnings)
        warn = f"<ul>{items}</ul>"
    else:
        warn = f'<p class="none">no warnings in {LOG_FILE}</p>'
    parts.append(_section("Health", (_img(health, "Health/ numbers") if health else "") + warn))
    res = (run.options or {}).get("resolution")
    rows_px = GRID_ROWS * int(res) if isinstance(res, int) and res > 0 else None
    pics = [_img(_image_data(path, rows_px), f"fakes {caption}") for caption, path in _pick_grids(run, grids)]
    if run.reals:
        pics.append(_img(_image_data(run.reals, rows_px), "training images (reals.png)"))
    parts.append(_section("Generated images", "".join(pics) or '<p class="none">no fakes grids yet</p>'))
    if run.nearest:
        parts.append(_section("Memorisation: closest fakes beside their nearest training images", "".join(
            _img(_image_data(p), os.path.basename(p)[: -len(PICTURE_SUFFIX)] + ": each row, a generated image "
                 "then its nearest training images") for p in run.nearest)))
    config = json.dumps(run.options, indent=2) if run.options is not None else f"no {OPTIONS_FILE}"
    parts.append(_section("Resolved configuration", f"<pre>{html.escape(config)}</pre>"))
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(run.name)}</title>'
            f"<style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


def write_report(run_dir: str, out: str | None = None, grids: int = 4) -> str:
    """Write the report of `run_dir` to `out` (default RUN_DIR/report.html) atomically; returns the path."""
    run = read_run(run_dir)
    out = out or os.path.join(run_dir, REPORT_FILE)
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise UserError(f"--out {out}: its folder does not exist")
    atomic_write_text(out, render(run, grids))
    return out
