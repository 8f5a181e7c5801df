"""Run directories: numbering, description, the options file and the console log.

A training run lives in `<outdir>/<NNNNN>-<desc>/`, numbered one past the highest number already in
`outdir` (as NVIDIA's `train.py` does, so runs sort by age), with `desc` built from the dataset name
and the options the user set explicitly (`mydata-mirror-auto1-gamma10-...`). The run directory holds
`training_options.json` (the fully resolved configuration), `log.txt` (everything printed to the
console), `stats.jsonl`, TensorBoard event files, image grids, network snapshots and `checkpoints/`.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import traceback

from sg2ada.errors import UserError
from sg2ada.training.options import TrainingOptions

OPTIONS_FILE = "training_options.json"
LOG_FILE = "log.txt"
CHECKPOINT_SUBDIR = "checkpoints"

RUN_ID = re.compile(r"^(\d+)")


def dataset_name(path: str) -> str:
    """The dataset's short name for the run description: the file or folder name without extension."""
    if path.startswith("builtin:"):
        return path.split(":", 1)[1] or "builtin"
    base = os.path.basename(os.path.normpath(path))
    name, ext = os.path.splitext(base)
    return name if ext in (".zip", ".tfrecords", ".tfrecord", ".json") else base


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def run_desc(data: str, *, cfg: str = "auto", gpus: int = 1, cond: bool = False, subset: int | None = None,
             mirror: bool = False, gamma: float | None = None, kimg: int | None = None,
             batch: int | None = None, aug: str | None = None, p: float | None = None,
             target: float | None = None, augpipe: str | None = None, resume: str | None = None,
             freezed: int | None = None) -> str:
    """NVIDIA's run description: the dataset name followed by each option the user set explicitly.

    Arguments left at None were not given on the command line and so stay out of the description, as
    in NVIDIA's `train.py`; `auto` carries the device count because its hyperparameters depend on it.
    """
    desc = dataset_name(data)
    if cond:
        desc += "-cond"
    if subset is not None:
        desc += f"-subset{subset}"
    if mirror:
        desc += "-mirror"
    desc += f"-{cfg}"
    if cfg == "auto":
        desc += f"{gpus:d}"
    if gamma is not None:
        desc += f"-gamma{_fmt(float(gamma))}"
    if kimg is not None:
        desc += f"-kimg{_fmt(kimg)}"
    if batch is not None:
        desc += f"-batch{batch}"
    if aug is not None:
        desc += f"-{aug}"
    if p is not None:
        desc += f"-p{_fmt(float(p))}"
    if target is not None:
        desc += f"-target{_fmt(float(target))}"
    if augpipe is not None:
        desc += f"-{augpipe}"
    if resume is not None:
        from sg2ada.training.transfer import TRANSFER_SOURCES

        # NVIDIA names a run from a published source after it (`-resumeffhq256`), any other weights `-resumecustom`.
        if resume == "noresume":
            desc += "-noresume"
        elif resume in TRANSFER_SOURCES:
            desc += f"-resume{resume}"
        else:
            desc += "-resumecustom"
    if freezed is not None:
        desc += f"-freezed{freezed:d}"
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", desc)


def next_run_id(outdir: str) -> int:
    """One past the highest `NNNNN-` prefix among the directories in outdir (0 for a new outdir)."""
    ids = []
    if os.path.isdir(outdir):
        for name in os.listdir(outdir):
            m = RUN_ID.match(name)
            if m and os.path.isdir(os.path.join(outdir, name)):
                ids.append(int(m.group(1)))
    return max(ids, default=-1) + 1


def next_run_dir(outdir: str, desc: str) -> str:
    """The path of the next numbered run directory; not created here (a dry run creates nothing)."""
    return os.path.join(outdir, f"{next_run_id(outdir):05d}-{desc}")


def create_run_dir(outdir: str, desc: str) -> str:
    """Create the next numbered run directory, retrying if a concurrent run took the same number."""
    os.makedirs(outdir, exist_ok=True)
    for _ in range(100):
        path = next_run_dir(outdir, desc)
        try:
            os.mkdir(path)  # fails if another process just made it: then take the next number
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run directory in {outdir}")


def latest_run_dir(outdir: str) -> str | None:
    """The highest-numbered run directory in outdir that has checkpoints (for `--resume latest`)."""
    best = None
    if os.path.isdir(outdir):
        for name in os.listdir(outdir):
            m = RUN_ID.match(name)
            path = os.path.join(outdir, name)
            if m and os.path.isdir(os.path.join(path, CHECKPOINT_SUBDIR)) and (
                    best is None or int(m.group(1)) > best[0]):
                best = (int(m.group(1)), path)
    return best[1] if best else None


def is_run_dir(path: str) -> bool:
    """True for a directory written by `sg2ada train` (it has the options file)."""
    return os.path.isfile(os.path.join(path, OPTIONS_FILE))


def atomic_write_text(path: str, text: str) -> None:
    """Write a small text file so that readers see either the old or the new content, never half."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def find_run_dir(outdir: str, run_id: int) -> str:
    """The run directory numbered `run_id` in outdir (how other workers find the chief's run)."""
    prefix = f"{run_id:05d}-"
    for name in sorted(os.listdir(outdir)):
        if name.startswith(prefix) and os.path.isdir(os.path.join(outdir, name)):
            return os.path.join(outdir, name)
    raise UserError(f"run {prefix}* is not in {outdir} as seen by this worker: every worker needs the same "
                    "--outdir on a shared filesystem")


def write_options(run_dir: str, opts: TrainingOptions) -> str:
    path = os.path.join(run_dir, OPTIONS_FILE)
    atomic_write_text(path, opts.to_json())
    return path


def read_options(run_dir: str) -> TrainingOptions:
    path = os.path.join(run_dir, OPTIONS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror}); the run cannot be continued") from None
    return TrainingOptions.from_json(text, where=path)


class _Tee:
    """A text stream that writes to the console stream and to the log file."""

    def __init__(self, stream, log):
        self._stream = stream
        self._log = log

    def write(self, text):
        self._stream.write(text)
        if self._log is not None and not self._log.closed:
            self._log.write(text)
            self._log.flush()  # a killed run keeps everything it printed
        return len(text)

    def flush(self):
        self._stream.flush()
        if self._log is not None and not self._log.closed:
            self._log.flush()

    def isatty(self):
        return self._stream.isatty()

    def fileno(self):
        return self._stream.fileno()

    @property
    def encoding(self):
        return getattr(self._stream, "encoding", "utf-8")

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def tee_console(log_path: str | None):
    """Copy stdout and stderr to `log_path` (appending, so a resumed run keeps one log).

    Yields the original stderr: progress bars write there so their carriage returns stay out of the
    log. An exception passing through is logged too. With `log_path=None` (non-chief workers)
    nothing is copied.
    """
    orig_out, orig_err = sys.stdout, sys.stderr
    if log_path is None:
        yield orig_err
        return
    log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in the finally below)
    sys.stdout, sys.stderr = _Tee(orig_out, log), _Tee(orig_err, log)
    try:
        yield orig_err
    except Exception as e:
        # The CLI prints the error after the tee is gone: keep it in log.txt as well.
        log.write(f"error: {e}\n" if isinstance(e, UserError) else "".join(traceback.format_exception(e)))
        raise
    finally:
        sys.stdout, sys.stderr = orig_out, orig_err
        log.close()


LOCK_FILE = "lock.json"


@contextlib.contextmanager
def run_lock(run_dir: str):
    """One live writer per run directory: `lock.json` (host, pid, start time), made atomically.

    A lock left by a dead process on this host is taken over with a warning; a live one, or one
    from another host (whose process we cannot see), is refused in one line naming the holder and
    how to break the lock. Removed on exit.
    """
    import json
    import socket
    import time

    path = os.path.join(run_dir, LOCK_FILE)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                with open(path, encoding="utf-8") as f:
                    holder = json.load(f)
                host, pid = str(holder["host"]), int(holder["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                holder, host, pid = {}, None, None  # half-written by a process killed while taking it
            if host == me["host"] and pid is not None and _alive(pid):
                raise UserError(f"{run_dir} is being trained by process {pid} on this host (since "
                                f"{holder.get('started')}); stop it first, or delete {path} if it is not training")
            if host not in (None, me["host"]):
                raise UserError(f"{run_dir} is locked by process {pid} on {host} (since {holder.get('started')}); "
                                f"if nothing trains it there any more, delete {path}")
            left_by = f"process {pid} on {host}, since {holder.get('started')}" if holder else "an unreadable lock"
            print(f"warning: taking over the lock of {run_dir} ({left_by}): that process is gone")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            continue
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
        except OSError:  # a full disk: leave no empty lock behind
            os.unlink(path)
            raise
        break
    else:
        raise UserError(f"could not lock {run_dir}: another process keeps taking {path}")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
