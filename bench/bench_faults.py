"""Fault campaign: `sg2ada train` run as a user types it, killed and starved in every way a long run
meets on shared machines, then resumed; one table row per trial.

Every training process is `python -m sg2ada.cli.main train ...` on a 32-image 8x8 built-in dataset
(`--cfg tiny`, ADA with `--ada-kimg 2` so that p moves). Trials:

  kill-*         SIGKILL chains: a run killed again and again, each time resumed with `--resume RUN`,
                 until it reaches --kimg. Each kill lands at a seeded random moment (`kill-random`, the
                 delay is printed) or the instant a write is seen in progress: a checkpoint
                 (`ckpt-N_temp` / the state file's temp), a snapshot (`.network-snapshot-*.tmp-*`), a
                 backup upload (`*.tmp-*` under --backup-uri, a local folder) or a metric evaluation
                 (`Evaluating metrics...` in log.txt; fid1k_full against the tiny Inception graph the
                 metric tests use, since no real feature network is available offline).
  disk-full-*    the run directory on a small tmpfs, filled at a chosen moment: before a resume (the
                 options file and log), at a tick line leaving room for stats but not a checkpoint, at a
                 snapshot tick, or while a checkpoint is being written. Then the space is freed and the
                 run resumed.
  read-only-*    the run directory remounted read-only (a read-only bind mount: root ignores mode bits)
                 before a resume or in the middle of a session; then made writable and resumed.
  two-writers    two `--resume RUN` started together; then one more resume to the end.
  shard-*        a byte-flipped `data-*.tfrecords` shard before a new run, or during a session.
  dataset-gone   the dataset folder moved away during a session (and back before the last resume).

The fault trials start from a copy of one shared run trained to half of --kimg ("base") and are
compared with the base continued without faults; the kill chains are compared with an uninterrupted
run. Columns: resumable (the last session reached --kimg and every resume restored the newest complete
checkpoint), kimg (reached / wanted), p (final ADA p equals the fault-free run's), weights (final
network-snapshot weights.npz equal, rtol 1e-5), lost (files the fault-free run has and the trial lacks;
stray temp files are listed with +), exit codes of the sessions, and the message the faulted session
showed (`1 line` when it is a single `error:` line, `traceback` otherwise).

Needs root for tmpfs and bind mounts (trials that need them are skipped otherwise).

Usage: PYTHONPATH=src .venv/bin/python bench/bench_faults.py [--quick] [--seed 1] [--jobs 2]
           [--workdir DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KIMG = 0.4
BASE_KIMG = 0.2
TRAIN_ARGS = ["--cfg", "tiny", "--cbase", "128", "--cmax", "16", "--map", "1", "--batch", "4", "--batch-gpu", "4",
              "--metrics", "none", "--tick", "0.02", "--snap", "2", "--seed", "1", "--aug", "ada", "--ada-kimg", "2"]
SESSION_TIMEOUT_SEC = 900
_TF_LOG = re.compile(r"^[EWI]\d{4} |^WARNING: All log messages before absl|^\s*$")
_RESUMED = re.compile(r"Resumed from (\S+): kimg ([\d.]+), tick (\d+), augment p ([\d.]+)")
_TEMP = re.compile(r"_temp|\.tmp|\.old-")
_print_lock = threading.Lock()


def say(text: str) -> None:
    with _print_lock:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


@dataclasses.dataclass
class Trial:
    name: str
    detail: str = ""
    exit_codes: list = dataclasses.field(default_factory=list)
    resumable: str = "?"
    kimg: str = "?"
    p_equal: str = "?"
    weights_equal: str = "?"
    lost: str = "?"
    message: str = ""
    notes: list = dataclasses.field(default_factory=list)
    expected_ckpt: str | None = None  # kill trials: the newest complete checkpoint at the kill
    stray_after_kill: list = dataclasses.field(default_factory=list)


class Campaign:
    def __init__(self, workdir: str, seed: int, env: dict):
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.env = env
        self.data = os.path.join(workdir, "data")
        self._mounts = []
        self._lock = threading.Lock()

    # ---- processes ------------------------------------------------------------------------

    def start(self, args: list[str], out_path: str) -> subprocess.Popen:
        out = open(out_path, "w")  # noqa: SIM115 (closed by the waiter)
        proc = subprocess.Popen([sys.executable, "-m", "sg2ada.cli.main", "train", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir,
                                start_new_session=True)
        proc._out = out  # noqa: SLF001
        proc._out_path = out_path  # noqa: SLF001
        return proc

    @staticmethod
    def finish(proc: subprocess.Popen, timeout: float = SESSION_TIMEOUT_SEC) -> int:
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
            rc = f"hung>{timeout:.0f}s"
        proc._out.close()  # noqa: SLF001
        return rc

    def run(self, args: list[str], out_path: str) -> int:
        return self.finish(self.start(args, out_path))

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    # ---- mounts ---------------------------------------------------------------------------

    def mount(self, *args: str) -> None:
        subprocess.run(["mount", *args], check=True, capture_output=True)

    def tmpfs(self, path: str, size: str) -> None:
        os.makedirs(path, exist_ok=True)
        self.mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", path)
        with self._lock:
            self._mounts.append(path)

    def read_only(self, path: str) -> None:
        self.mount("--bind", path, path)
        with self._lock:
            self._mounts.append(path)
        self.mount("-o", "remount,ro,bind", path)

    def unmount(self, path: str) -> None:
        subprocess.run(["umount", path], check=True, capture_output=True)
        with self._lock:
            self._mounts.remove(path)

    def unmount_all(self) -> None:
        for path in reversed(list(self._mounts)):
            subprocess.run(["umount", "-l", path], capture_output=True)

    # ---- setup runs ---------------------------------------------------------------------------

    def make_dataset(self) -> None:
        if not os.path.isdir(self.data):
            subprocess.run([sys.executable, "-m", "sg2ada.cli.main", "dataset", "--source", "builtin:shapes",
                            "--dest", self.data, "--resolution", "8", "--max-images", "32"], check=True,
                           env=self.env, capture_output=True)

    def new_run(self, name: str, kimg: float, extra=()) -> tuple[str, int]:
        outdir = os.path.join(self.workdir, name)
        rc = self.run(["--outdir", outdir, "--data", self.data, *TRAIN_ARGS, "--kimg", str(kimg), *extra],
                      os.path.join(self.workdir, f"{name}.out"))
        return run_dir_in(outdir), rc

    def copy_base(self, base: str, dest_parent: str) -> str:
        os.makedirs(dest_parent, exist_ok=True)
        dest = os.path.join(dest_parent, os.path.basename(base))
        shutil.copytree(base, dest, symlinks=True)
        return dest


# ---- observations -------------------------------------------------------------------------------


def run_dir_in(outdir: str, exclude=()) -> str | None:
    """The newest numbered run directory in outdir (not one of `exclude`)."""
    runs = sorted(d for d in os.listdir(outdir) if re.match(r"^\d{5}-", d)) if os.path.isdir(outdir) else []
    runs = [os.path.join(outdir, d) for d in runs if os.path.join(outdir, d) not in exclude]
    return runs[-1] if runs else None


def wait_for(proc, predicate, timeout: float, poll_sec: float = 0.002):
    """Poll `predicate()` until it returns something truthy (returned), the process ends or timeout."""
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        with contextlib.suppress(OSError):
            hit = predicate()
            if hit:
                return hit
        time.sleep(poll_sec)
    return None


def nth_seen(lister, n: int):
    """A predicate for wait_for: true while a write is in progress, once `n` distinct temporary names
    (one per write) have been seen."""
    seen = set()

    def predicate():
        now = lister() or []
        seen.update(now)
        return now if len(seen) >= n and now else None

    return predicate


def checkpoint_temps(run_dir):
    d = os.path.join(run_dir, "checkpoints")
    return [n for n in os.listdir(d) if _TEMP.search(n)] if os.path.isdir(d) else []


def snapshot_temps(run_dir):
    return [n for n in os.listdir(run_dir) if n.startswith(".network-snapshot-")]


def backup_temps(backup_dir):
    """Uploads in progress under --backup-uri; when none is caught (local uploads are brief), the
    newest completed upload, so that a kill still lands among the uploads of one tick."""
    temps, newest = [], (0, "")
    for root, _, files in os.walk(backup_dir):
        for n in files:
            if ".tmp-" in n:
                temps.append(n)
            else:
                newest = max(newest, (os.stat(os.path.join(root, n)).st_mtime_ns, n))
    return temps or ([f"just after uploading {newest[1]}@{newest[0]}"] if newest[1] else [])


def log_count(run_dir, text):
    try:
        with open(os.path.join(run_dir, "log.txt"), encoding="utf-8", errors="replace") as f:
            return f.read().count(text)
    except OSError:
        return 0


def tick_lines(run_dir):
    try:
        with open(os.path.join(run_dir, "log.txt"), encoding="utf-8", errors="replace") as f:
            return [int(m.group(1)) for m in re.finditer(r"^tick (\d+) ", f.read(), re.M)]
    except OSError:
        return []


def latest_checkpoint(run_dir) -> str | None:
    try:
        with open(os.path.join(run_dir, "checkpoints", "checkpoint")) as f:
            m = re.search(r'^model_checkpoint_path: "([^"]+)"', f.read(), re.M)
            return os.path.basename(m.group(1)) if m else None
    except OSError:
        return None


def strays(run_dir) -> list[str]:
    out = []
    for root, dirs, files in os.walk(run_dir):
        for n in dirs + files:
            if _TEMP.search(n) or n.startswith(".tmp-"):
                out.append(os.path.relpath(os.path.join(root, n), run_dir))
    return sorted(out)


def output_text(path) -> list[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        return [ln.rstrip("\n") for ln in f if not _TF_LOG.match(ln)]


def message_of(path) -> str:
    """What the user saw from a failed session: its last line, and whether that was all."""
    lines = output_text(path)
    if not lines:
        return "(nothing)"
    tb = next((i for i, ln in enumerate(lines) if ln.startswith("Traceback")), None)
    # TensorFlow's op prefix is shortened, not hidden: it is part of what the user saw
    last = re.sub(r"\{\{function_node [^}]*\}\}", "{{function_node ...}}", lines[-1].strip())
    last = last.replace("tensorflow.python.framework.errors_impl.", "")
    last = last[:140]
    if tb is not None:
        frames = re.findall(r'File ".*?/sg2ada/([^"]+)", line (\d+), in (\w+)', "\n".join(lines[tb:]))
        where = f" (from {frames[-1][0]}:{frames[-1][1]} {frames[-1][2]})" if frames else ""
        return f"traceback ({len(lines) - tb} lines){where}: {last}"
    return f"1 line: {last}" if last.startswith("error:") else f"no error line: {last}"


def warnings_of(path) -> list[str]:
    return [ln.strip()[:150] for ln in output_text(path)
            if re.search(r"warning|error|Traceback", ln, re.I) and not ln.startswith("tick ")]


def resumed_from(path):
    m = None
    for ln in output_text(path):
        m = _RESUMED.search(ln) or m
    return (os.path.basename(m.group(1)), float(m.group(2)), int(m.group(3)), float(m.group(4))) if m else None


def stats(run_dir) -> list[dict]:
    out = []
    with contextlib.suppress(OSError), open(os.path.join(run_dir, "stats.jsonl")) as f:
        for ln in f:
            d = json.loads(ln)
            out.append({k: d[k]["mean"] for k in ("Progress/tick", "Progress/kimg", "Progress/augment") if k in d})
    return out


def files_of(run_dir) -> set[str]:
    out = set()
    for root, _, files in os.walk(run_dir):
        for n in files:
            rel = os.path.relpath(os.path.join(root, n), run_dir)
            out.add(re.sub(r"events\.out\.tfevents\..*", "events.out.tfevents.*", rel))
    return out


def compare(trial: Trial, run_dir: str, ref_dir: str, ignore=r"^metric-") -> None:
    """Fill kimg, p, weights and files lost of `trial` from its final run directory."""
    want = stats(ref_dir)
    got = stats(run_dir) if run_dir else []
    trial.kimg = f"{got[-1]['Progress/kimg']:g}/{want[-1]['Progress/kimg']:g}" if got else "none"
    if got and want:
        same_p = abs(got[-1]["Progress/augment"] - want[-1]["Progress/augment"]) <= 1e-6
        trial.p_equal = "yes" if same_p else f"no ({got[-1]['Progress/augment']:.4f} vs {want[-1]['Progress/augment']:.4f})"
        ticks = [s["Progress/tick"] for s in got]
        if ticks != [s["Progress/tick"] for s in want]:
            trial.notes.append(f"stats.jsonl ticks differ from the fault-free run ({len(ticks)} vs {len(want)} lines)")
    weights = []
    for d in (run_dir, ref_dir):
        snaps = sorted(n for n in os.listdir(d) if n.startswith("network-snapshot-")) if d and os.path.isdir(d) else []
        weights.append(os.path.join(d, snaps[-1], "weights.npz") if snaps else None)
    if weights[0] and os.path.exists(weights[0]):
        a, b = np.load(weights[0]), np.load(weights[1])
        bad = [k for k in b.files if k not in a.files or not np.allclose(a[k], b[k], rtol=1e-5, atol=1e-8)]
        trial.weights_equal = "yes" if not bad else f"no ({len(bad)}/{len(b.files)} arrays)"
    else:
        trial.weights_equal = "no snapshot"
    lost = sorted(f for f in files_of(ref_dir) - (files_of(run_dir) if run_dir else set()) if not re.search(ignore, f))
    extra = strays(run_dir) if run_dir else []
    trial.lost = ", ".join(lost + [f"+{s}" for s in extra]) or "none"


# ---- SIGKILL chains --------------------------------------------------------------------------------



def kill_chain(c: Campaign, name: str, kinds: list[str], ref_dir: str) -> list[Trial]:
    """One run killed once per entry of `kinds`, each kill judged by the resume after it; then the
    end state of the run compared with the uninterrupted reference. A run that cannot be resumed is
    started again, as its user would have to (at most twice)."""
    outdir = os.path.join(c.workdir, name)
    backup_dir = os.path.join(c.workdir, f"{name}-backup")
    run_dir, trials, pending, broken, restarts = None, [], None, set(), 0
    left_before = set()  # temporary files left by earlier kills of this chain
    queue = [*kinds, None]
    i = -1
    while queue:
        kind = queue.pop(0)
        i += 1
        out = os.path.join(c.workdir, f"{name}-s{i}.out")
        extra = ["--backup-uri", backup_dir] if kind == "backup" else []
        if kind == "metric":
            extra += ["--metrics", "fid1k_full"]
        elif trials and trials[-1].name.endswith("kill-metric"):
            extra += ["--metrics", "none"]
        run_dir = run_dir or run_dir_in(outdir, broken)
        args = ["--resume", run_dir] if run_dir else ["--outdir", outdir, "--data", c.data, *TRAIN_ARGS,
                                                       "--kimg", str(KIMG)]
        proc = c.start(args + extra, out)
        t = Trial(f"{name}: kill-{kind}" if kind else f"{name}: end")
        if kind is None:
            hit = None
        elif kind == "random":
            delay = c.rng.uniform(3.0, 75.0)
            hit = wait_for(proc, lambda: None, delay) is None and proc.poll() is None
            t.detail = f"at t={delay:.1f}s"
        else:
            def rd():
                return run_dir or run_dir_in(outdir, broken)

            nth = c.rng.randint(1, 4)  # the nth write of its kind seen in this session, so that runs progress
            if kind == "checkpoint":
                hit = wait_for(proc, nth_seen(lambda: rd() and checkpoint_temps(rd()), nth), 600)
            elif kind == "snapshot":
                hit = wait_for(proc, nth_seen(lambda: rd() and snapshot_temps(rd()), nth), 600)
            elif kind == "backup":
                hit = wait_for(proc, nth_seen(lambda: os.path.isdir(backup_dir) and backup_temps(backup_dir), nth),
                               600)
            else:
                nth = (nth + 1) // 2
                pause = c.rng.uniform(0.0, 1.5)
                before = log_count(rd(), "Evaluating metrics...") if rd() else 0
                hit = wait_for(proc, lambda: rd() and log_count(rd(), "Evaluating metrics...") >= before + nth,
                               600, 0.02)
                if hit:
                    time.sleep(pause)
                    hit = [f"{pause:.2f}s after `Evaluating metrics...`"]
            t.detail = re.sub(r"@\d+", "", f"in {', '.join(hit)}") if hit else "nothing seen"
            t.detail += f" (write {nth} of its kind in the session)" if hit else ""
        if hit and proc.poll() is None:
            c.kill(proc)
        rc = c.finish(proc)
        run_dir = run_dir or run_dir_in(outdir, broken)
        if pending is not None:
            judge_resume(pending, out, rc)
            pending = None
            if rc not in (0, -signal.SIGKILL) and restarts < 2 and run_dir:
                say(f"{name}: {os.path.basename(run_dir)} cannot be resumed ({message_of(out)}); starting again")
                broken.add(run_dir)
                run_dir, restarts = None, restarts + 1
                queue.insert(0, kind)
                continue
        if kind is None or rc != -signal.SIGKILL:  # the end, or a session that ended by itself
            if kind is not None:
                t.detail = f"no kill: the session ended with {rc} ({t.detail})"
            t.exit_codes = [rc]
            t.message = message_of(out) if rc != 0 else "; ".join(warnings_of(out)[:2]) or "-"
            if run_dir:
                compare(t, run_dir, ref_dir)
            t.resumable = "yes" if rc == 0 and t.kimg.split("/")[0] == t.kimg.split("/")[-1] else "no"
            if broken:
                t.notes.append(f"started again {len(broken)} time(s): {', '.join(map(os.path.basename, broken))} "
                               "could not be resumed")
            trials.append(t)
            say(f"{t.name}: rc={rc} kimg {t.kimg} weights equal {t.weights_equal}")
            return trials
        ticks = tick_lines(run_dir) if run_dir else []
        t.detail += f"; after tick {ticks[-1] if ticks else '-'}"
        t.exit_codes = [rc]
        t.expected_ckpt = latest_checkpoint(run_dir) if run_dir else None
        t.stray_after_kill = [x for x in (strays(run_dir) if run_dir else []) if x not in left_before]
        left_before.update(t.stray_after_kill)
        say(f"{t.name} {t.detail}: newest complete checkpoint {t.expected_ckpt}")
        trials.append(t)
        pending = t
    return trials


def judge_resume(t: Trial, out: str, rc) -> None:
    """Fill the kill trial `t` from the output of the session that resumed it (exit code `rc`)."""
    t.exit_codes.append(rc)
    got = resumed_from(out)
    t.p_equal = t.weights_equal = "(end row)"
    t.lost = ", ".join(f"+{s}" for s in t.stray_after_kill) + " (left by the kill)" if t.stray_after_kill else "none"
    t.message = message_of(out) if rc not in (0, -signal.SIGKILL) else "; ".join(warnings_of(out)[:2]) or "-"
    if got is None and rc == -signal.SIGKILL and t.expected_ckpt is not None:
        t.resumable, t.kimg = "n/a", "the next kill came before the restore"
        return
    if rc not in (0, -signal.SIGKILL):
        t.resumable, t.kimg = "no", "the resume failed"
        return
    if t.expected_ckpt is None:
        ok = got is None
        t.kimg = "fresh start (no checkpoint yet)" if got is None else f"restored {got[0]} though none was complete"
    else:
        ok = got is not None and got[0] == t.expected_ckpt
        t.kimg = f"restored {got[0]}: kimg {got[1]:g}, p {got[3]:.3f}" if got else "did not restore"
        if not ok:
            t.kimg += f"; newest complete was {t.expected_ckpt}"
    t.resumable = "yes" if ok else "no"


# ---- fault trials from the base run -----------------------------------------------------------------


def resume_args(run_dir):
    return ["--resume", run_dir, "--kimg", str(KIMG)]


def finish_trial(c: Campaign, t: Trial, run_dir: str, ref2: str, out_prefix: str, fault_out: str) -> None:
    """After the fault: one clean resume to the end, then compare with the fault-free continuation."""
    t.message = message_of(fault_out) if t.exit_codes and t.exit_codes[-1] != 0 else t.message or "(none)"
    before = latest_checkpoint(run_dir)
    out = f"{out_prefix}-resume.out"
    rc = c.run(resume_args(run_dir), out)
    t.exit_codes.append(rc)
    got = resumed_from(out)
    compare(t, run_dir, ref2)
    reached = t.kimg.split("/")[0] == t.kimg.split("/")[-1]
    t.resumable = "yes" if rc == 0 and reached and got and got[0] == before else "no"
    if got and got[0] != before:
        t.notes.append(f"resume restored {got[0]}, newest recorded was {before}")
    if rc != 0:
        t.notes.append(f"resume after the fault failed: {message_of(out)}")


def fill(path: str, leave_bytes: int = 0) -> str:
    """Fill the filesystem of `path` up to `leave_bytes` free; returns the filler's path."""
    filler = os.path.join(path, "filler")
    with open(filler, "wb") as f:
        while True:
            st = os.statvfs(path)
            free = st.f_bavail * st.f_frsize - leave_bytes
            if free <= 0:
                break
            try:
                f.write(b"\0" * min(free, 1 << 20))
                f.flush()
            except OSError:
                break
    return filler


def trial_disk_full(c: Campaign, base: str, ref2: str, when: str) -> Trial:
    """The run directory on a 24 MiB tmpfs, filled so that the write `when` is the first to fail:
    `options` (full before a resume), `checkpoint` (200 KiB left before a resume: the options file,
    log and stats fit, a ~360 KiB checkpoint does not), `snapshot` (64 KiB left right after the first
    new checkpoint, the next tick being a snapshot tick), `midwrite` (full the instant a checkpoint
    write is seen in progress)."""
    t = Trial(f"disk-full-{when}")
    mnt = os.path.join(c.workdir, f"fs-{when}")
    c.tmpfs(mnt, "24m")
    try:
        run_dir = c.copy_base(base, mnt)
        out = os.path.join(c.workdir, f"disk-full-{when}.out")
        if when in ("options", "checkpoint"):
            filler = fill(mnt, 0 if when == "options" else 200 << 10)
            t.detail = "full before a resume" if when == "options" else "200 KiB left before a resume"
            rc = c.run(resume_args(run_dir), out)
        else:
            proc = c.start(resume_args(run_dir), out)
            first = latest_checkpoint(run_dir)
            if when == "snapshot":
                hit = wait_for(proc, lambda: latest_checkpoint(run_dir) != first and latest_checkpoint(run_dir), 600)
                filler = fill(mnt, 64 << 10)
                t.detail = f"64 KiB left after {hit or 'nothing'}, before a snapshot tick"
            else:
                hit = wait_for(proc, lambda: checkpoint_temps(run_dir), 600)
                filler = fill(mnt)
                t.detail = f"full while {', '.join(hit) if hit else 'nothing'} was being written"
            rc = c.finish(proc)
        t.exit_codes = [rc]
        t.notes.append(f"after the fault the state file names {latest_checkpoint(run_dir)}; stray files: "
                       f"{', '.join(strays(run_dir)) or 'none'}")
        say(f"{t.name}: rc={rc} {message_of(out)}")
        os.remove(filler)
        finish_trial(c, t, run_dir, ref2, out[:-4], out)
    finally:
        c.unmount(mnt)
    return t


def trial_read_only(c: Campaign, base: str, ref2: str, when: str) -> Trial:
    t = Trial(f"read-only-{when}")
    run_dir = c.copy_base(base, os.path.join(c.workdir, f"ro-{when}"))
    out = os.path.join(c.workdir, f"read-only-{when}.out")
    if when == "before":
        t.detail = "run directory read-only before a resume"
        c.read_only(run_dir)
        rc = c.run(resume_args(run_dir), out)
    else:
        proc = c.start(resume_args(run_dir), out)
        n0 = len(tick_lines(run_dir))
        hit = wait_for(proc, lambda: tick_lines(run_dir)[n0:], 600, 0.005)
        c.read_only(run_dir)
        t.detail = f"remounted read-only after tick {hit[0] if hit else '-'}"
        rc = c.finish(proc)
    t.exit_codes = [rc]
    say(f"{t.name}: rc={rc} {message_of(out)}")
    c.unmount(run_dir)
    finish_trial(c, t, run_dir, ref2, out[:-4], out)
    return t


def trial_two_writers(c: Campaign, base: str, ref2: str) -> Trial:
    t = Trial("two-writers", "two `--resume RUN` started together")
    run_dir = c.copy_base(base, os.path.join(c.workdir, "two"))
    outs = [os.path.join(c.workdir, f"two-writers-{i}.out") for i in (1, 2)]
    procs = [c.start(resume_args(run_dir), o) for o in outs]
    rcs = [c.finish(p) for p in procs]
    t.exit_codes = rcs
    msgs = [message_of(o) for o, rc in zip(outs, rcs) if rc != 0]
    t.message = "; ".join(msgs) or "none: both ran"
    dup = [x for x in set(tick_lines(run_dir)) if tick_lines(run_dir).count(x) > 1 and x > 0]
    events = sum(n.startswith("events.out") for n in os.listdir(run_dir))
    if all(rc == 0 for rc in rcs):
        t.notes.append(f"both sessions ran to the end; {len(dup)} tick lines twice in log.txt, {events} event files")
    say(f"two-writers: rc={rcs} {t.message}")
    compare(t, run_dir, ref2)
    t.resumable = "yes" if any(rc == 0 for rc in rcs) and not dup else "no"
    return t


def flip_bytes(path: str, rng: random.Random, count: int = 16) -> None:
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        for _ in range(count):
            pos = rng.randrange(size // 4, size)
            f.seek(pos)
            b = f.read(1)
            f.seek(pos)
            f.write(bytes([b[0] ^ 0xFF]))


def private_dataset(c: Campaign, base_copy: str, name: str) -> str:
    """A dataset copy of the trial's own, written into the copied run's options file."""
    data = os.path.join(c.workdir, f"data-{name}")
    shutil.copytree(c.data, data)
    path = os.path.join(base_copy, "training_options.json")
    with open(path) as f:
        opts = json.load(f)
    opts["data"] = data
    with open(path, "w") as f:
        json.dump(opts, f, indent=2)
    return data


def shard_of(data: str) -> str:
    return os.path.join(data, sorted(n for n in os.listdir(data) if n.endswith(".tfrecords"))[0])


def trial_shard_before(c: Campaign, ref: str) -> Trial:
    t = Trial("shard-corrupt-before", "16 bytes flipped in the shard, then a new run")
    data = os.path.join(c.workdir, "data-corrupt-before")
    shutil.copytree(c.data, data)
    flip_bytes(shard_of(data), random.Random(c.rng.random()))
    outdir = os.path.join(c.workdir, "shard-before")
    out = os.path.join(c.workdir, "shard-corrupt-before.out")
    rc = c.run(["--outdir", outdir, "--data", data, *TRAIN_ARGS, "--kimg", str(KIMG)], out)
    t.exit_codes = [rc]
    t.message = message_of(out)
    left = run_dir_in(outdir)
    t.notes.append(f"run directory left behind: {os.path.basename(left)} ({len(os.listdir(left))} entries)"
                   if left else "no run directory left behind")
    t.resumable = "n/a (no training state)" if rc != 0 else "?"
    t.kimg = t.p_equal = t.weights_equal = t.lost = "-"
    if rc == 0:
        t.notes.append("trained on corrupted data without a word")
        compare(t, left, ref)
    say(f"{t.name}: rc={rc} {t.message}")
    return t


def trial_data_during(c: Campaign, base: str, ref2: str, what: str) -> Trial:
    t = Trial(what)
    run_dir = c.copy_base(base, os.path.join(c.workdir, what))
    data = private_dataset(c, run_dir, what)
    out = os.path.join(c.workdir, f"{what}.out")
    proc = c.start(resume_args(run_dir), out)
    n0 = len(tick_lines(run_dir))
    hit = wait_for(proc, lambda: tick_lines(run_dir)[n0:], 600, 0.005)
    moved = data + ".away"
    if what == "dataset-gone":
        os.rename(data, moved)
        t.detail = f"dataset moved away after tick {hit[0] if hit else '-'}"
    else:
        keep = shard_of(data) + ".good"
        shutil.copy(shard_of(data), keep)
        flip_bytes(shard_of(data), random.Random(c.rng.random()))
        t.detail = f"16 bytes flipped in the shard after tick {hit[0] if hit else '-'}"
    rc = c.finish(proc)
    t.exit_codes = [rc]
    say(f"{t.name}: rc={rc} {message_of(out)}")
    if rc == 0:
        t.notes.append("the session finished: the dataset was already in memory")
        # a later session reads the damage: show what a resume says
        probe = os.path.join(c.workdir, f"{what}-probe.out")
        rc2 = c.run(["--resume", run_dir, "--kimg", str(KIMG + 0.02)], probe)
        t.notes.append(f"a resume with the damage in place: rc {rc2}, {message_of(probe)}")
        t.message = f"(during: none) next session: {message_of(probe)}"
    if what == "dataset-gone":
        os.rename(moved, data)
    else:
        os.replace(keep, shard_of(data))
    finish_trial(c, t, run_dir, ref2, out[:-4], out)
    return t


# ---- table ------------------------------------------------------------------------------------------


def table(trials: list[Trial]) -> str:
    head = ["trial", "fault", "resumable", "kimg / restored", "p equal", "weights equal", "lost (+ stray)",
            "exit codes", "message"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in trials:
        cells = [t.name, t.detail, t.resumable, t.kimg, t.p_equal, t.weights_equal, t.lost,
                 " ".join(str(x) for x in t.exit_codes), t.message]
        rows.append("| " + " | ".join(str(x).replace("|", "/") for x in cells) + " |")
    notes = [f"- {t.name}: {n}" for t in trials for n in t.notes]
    return "\n".join(rows + ([""] + notes if notes else []))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one kill chain (5 kills) and 6 fault kinds")
    ap.add_argument("--seed", type=int, default=1, help="seed of the kill moments and flipped bytes")
    ap.add_argument("--jobs", type=int, default=2, help="training processes at a time")
    ap.add_argument("--workdir", default="/tmp/sg2ada-faults", help="scratch folder (emptied first)")
    ap.add_argument("--json", metavar="FILE", help="also write the trials as JSON")
    args = ap.parse_args()

    if os.path.exists(args.workdir):
        shutil.rmtree(args.workdir)
    os.makedirs(args.workdir)
    env = dict(os.environ, SG2ADA_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    inception = os.path.join(args.workdir, "classify_image_graph_def.pb")
    # The metric tests' tiny Inception graph (same file format): the real one cannot be downloaded here.
    subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[2]); "
                    "from conftest import build_inception_graph_def as b; "
                    "open(sys.argv[1], 'wb').write(b().SerializeToString())", inception,
                    os.path.join(REPO, "tests", "metrics")], check=True, env=env, capture_output=True)
    env["SG2ADA_INCEPTION"] = inception
    c = Campaign(args.workdir, args.seed, env)
    root = os.geteuid() == 0
    t0 = time.time()
    say(f"fault campaign in {args.workdir}, seed {args.seed}, {args.jobs} jobs{', quick' if args.quick else ''}")
    c.make_dataset()

    if args.quick:
        chains = {"chain1": ["random", "checkpoint", "snapshot", "metric", "backup"]}
    else:
        chains = {"chain1": ["random", "checkpoint", "random", "snapshot", "metric", "backup"],
                  "chain2": ["snapshot", "random", "checkpoint", "random", "checkpoint", "backup"],
                  "chain3": ["random", "random", "snapshot", "checkpoint", "metric", "random"],
                  "chain4": ["checkpoint", "snapshot", "random", "backup", "random", "random"]}
    for name, kinds in chains.items():
        say(f"{name}: kills {', '.join(kinds)}")

    results: list[Trial] = []
    try:
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            say("reference run and base run (half the kimg)")
            f_ref = pool.submit(c.new_run, "reference", KIMG)
            f_base = pool.submit(c.new_run, "base", BASE_KIMG)
            ref, rc_ref = f_ref.result()
            base, rc_base = f_base.result()
            say(f"reference rc={rc_ref}, base rc={rc_base}")
            if rc_ref != 0 or rc_base != 0:
                print(message_of(os.path.join(args.workdir, "reference.out" if rc_ref else "base.out")))
                return 1
            ref2 = c.copy_base(base, os.path.join(args.workdir, "continued"))
            jobs = [pool.submit(kill_chain, c, name, kinds, ref) for name, kinds in chains.items()]
            rc2 = c.run(resume_args(ref2), os.path.join(args.workdir, "continued.out"))
            say(f"base continued without faults rc={rc2}")
            faults = [lambda: [trial_shard_before(c, ref)], lambda: [trial_two_writers(c, base, ref2)],
                      lambda: [trial_data_during(c, base, ref2, "dataset-gone")]]
            if not args.quick:
                faults.append(lambda: [trial_data_during(c, base, ref2, "shard-corrupt-during")])
            if root:
                kinds = ["options", "checkpoint"] if args.quick else ["options", "checkpoint", "snapshot", "midwrite"]
                faults += [lambda w=w: [trial_disk_full(c, base, ref2, w)] for w in kinds]
                faults += [lambda w=w: [trial_read_only(c, base, ref2, w)]
                           for w in (["during"] if args.quick else ["before", "during"])]
            else:
                say("not root: disk-full and read-only trials skipped")
            jobs += [pool.submit(f) for f in faults]
            for j in jobs:
                try:
                    results += j.result()
                except Exception as e:  # noqa: BLE001 (one broken trial must not hide the others)
                    results.append(Trial("campaign error", f"{type(e).__name__}: {e}"))
    finally:
        c.unmount_all()
    say(f"done in {(time.time() - t0) / 60:.1f} min")
    print()
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dataclasses.asdict(t) for t in results], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
