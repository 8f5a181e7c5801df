"""`make demo` (`python -m sg2ada.cli.demo`): train the `tiny` preset on the built-in shapes dataset
for a few minutes on the CPU, then say where to look.

1. builds `demo-data/shapes` with `sg2ada dataset --source builtin:shapes` unless it is there;
2. runs `sg2ada train --outdir runs --data demo-data/shapes --cfg tiny` with a time limit
   (SG2ADA_DEMO_MINUTES, default 5.5, counted from the start of training including graph tracing);
3. writes `demo-before-after.png` into the run directory (the same latents at the start and now)
   and prints the run directory, the last fakes grid and the TensorBoard command.

The run is an ordinary run: `sg2ada train --resume runs/<run>` continues it toward the preset's
200 kimg. Paths are relative to the current directory (`runs/` and `demo-data/` are git-ignored).
"""

from __future__ import annotations

import glob
import os
import sys
import time

DATA_DIR = os.path.join("demo-data", "shapes")
OUT_DIR = "runs"
DEFAULT_MINUTES = 5.5
# Part of the 32x32-cell grid shown side by side: enough cells to judge, small enough to see them.
PANEL_CELLS = (12, 6)


def _minutes() -> float:
    raw = os.environ.get("SG2ADA_DEMO_MINUTES")
    if not raw:
        return DEFAULT_MINUTES
    try:
        value = float(raw)
    except ValueError:
        value = -1
    if value <= 0:
        from sg2ada.errors import UserError

        raise UserError(f"SG2ADA_DEMO_MINUTES={raw!r}: give a positive number of minutes")
    return value


def build_dataset(dest: str = DATA_DIR) -> str:
    if os.path.isfile(os.path.join(dest, "dataset.json")):
        print(f"Using the demo dataset in {dest}")
        return dest
    from sg2ada.data import convert_dataset

    print(f"Building the built-in shapes dataset in {dest} ...")
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    convert_dataset("builtin:shapes", dest)
    return dest


def before_after(run_dir: str, cell: int, out_name: str = "demo-before-after.png") -> str | None:
    """Crop the same cells of fakes_init.png and the newest fakes grid, side by side, 2x enlarged."""
    import numpy as np
    import PIL.Image

    from sg2ada.images import save_png

    grids = sorted(glob.glob(os.path.join(run_dir, "fakes[0-9]*.png")))
    init = os.path.join(run_dir, "fakes_init.png")
    if not grids or not os.path.exists(init):
        return None
    w, h = PANEL_CELLS[0] * cell, PANEL_CELLS[1] * cell
    a = np.asarray(PIL.Image.open(init).convert("RGB"))[:h, :w]
    b = np.asarray(PIL.Image.open(grids[-1]).convert("RGB"))[:h, :w]
    gap = np.full([a.shape[0], cell // 2, 3], 255, np.uint8)
    both = np.concatenate([a, gap, b], axis=1)
    return save_png(both.repeat(2, axis=0).repeat(2, axis=1), os.path.join(run_dir, out_name))


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from sg2ada.cli.main import main as cli
    from sg2ada.console import import_tensorflow_quietly
    from sg2ada.errors import UserError

    t0 = time.time()
    import_tensorflow_quietly()  # building the dataset imports TensorFlow: without its start-up banner
    from sg2ada.training.report import write_report  # imports TensorFlow: after the quiet import above
    try:
        minutes = _minutes()
        data = build_dataset()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(f"Training the tiny preset for about {minutes:g} minutes on {data} ...")
    status = cli(["train", "--outdir", OUT_DIR, "--data", data, "--cfg", "tiny", "--tick", "1", "--snap", "4",
                  "--metrics", "none", "--time-limit", f"{minutes:g}"])
    runs = sorted(glob.glob(os.path.join(OUT_DIR, "[0-9][0-9][0-9][0-9][0-9]-shapes-tiny*")))
    if not runs:
        return status or 1
    run_dir = runs[-1]
    grids = sorted(glob.glob(os.path.join(run_dir, "fakes[0-9]*.png")))
    compare = before_after(run_dir, cell=32)
    report = write_report(run_dir)
    print()
    print(f"Demo finished in {time.time() - t0:.0f} s (exit status {status}).")
    print(f"Run directory:  {run_dir}")
    if grids:
        print(f"Fakes grid:     {grids[-1]}   (at the start: {os.path.join(run_dir, 'fakes_init.png')})")
    if compare:
        print(f"Before / after: {compare}")
    print(f"Report:         {report}   (opens offline in a browser)")
    print(f"TensorBoard:    tensorboard --logdir {OUT_DIR}")
    print(f"Keep training:  sg2ada train --resume {run_dir}")
    return status


if __name__ == "__main__":
    sys.exit(main())
