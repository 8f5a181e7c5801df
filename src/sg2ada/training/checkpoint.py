"""Training checkpoints: the whole training state, written so that a kill never loses a run.

`CheckpointKeeper` wraps `tf.train.CheckpointManager` around `trainer.checkpoint_items()` (networks,
optimizers with their slots, cur_nimg, ADA state, pl_mean, RNG state) plus the loop's own state (tick,
elapsed time). The input position is restored by the loop from cur_nimg (see training_loop).

Why a kill at any moment is safe: `Checkpoint.write` first writes `ckpt-N.data-*` and `ckpt-N.index`
under their final names (a new N every time: numbers come from the restored `save_counter`, so the
checkpoint the state file points at is never rewritten) and only then, in a write callback,
CheckpointManager rewrites the `checkpoint` state file with `atomic_write_string_to_file` (temp file +
rename). A kill before the rename leaves the state file naming the previous complete checkpoint; the
orphaned half-written `ckpt-N` is overwritten by the next save. `tests/training/test_checkpoint.py`
checks both orderings and the SIGKILL test in `test_resume.py` checks it end to end.

A checkpoint that fails to read (truncated or bit-flipped files: the bundle format checksums every
tensor) is skipped with a warning and the next older one is restored instead.

`--backup-uri` mirrors checkpoints (and, via `Backup.copy_tree`, snapshots) to any `tf.io.gfile`
location; files are copied under a temporary name and renamed, and the backup's state file is written
last, so the backup is as crash-safe as the local copy.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
import warnings

import tensorflow as tf

from sg2ada.errors import UserError

STATE_FILE = "checkpoint"  # CheckpointManager's state file name
_CKPT_RE = re.compile(r"^ckpt-(\d+)\.index$")


class CheckpointCorruptWarning(UserWarning):
    """The newest checkpoint could not be read; an older one was used."""


def list_checkpoints(directory: str) -> list[str]:
    """Checkpoint prefixes in `directory`, newest first.

    Those recorded in the state file come first (they are complete by construction); if the state
    file is missing or unreadable, every `ckpt-N.index` on disk is a candidate, newest number first.
    """
    recorded = []
    try:
        state = tf.train.get_checkpoint_state(directory)
    except Exception:  # a garbled state file: fall back to the listing  # noqa: BLE001
        state = None
    if state is not None:
        for p in list(state.all_model_checkpoint_paths)[::-1]:
            p = p if os.path.isabs(p) or "://" in p else os.path.join(directory, p)
            if p not in recorded:
                recorded.append(p)
        if state.model_checkpoint_path:
            latest = state.model_checkpoint_path
            latest = latest if os.path.isabs(latest) or "://" in latest else os.path.join(directory, latest)
            if latest in recorded:
                recorded.remove(latest)
            recorded.insert(0, latest)
        recorded = [p for p in recorded if tf.io.gfile.exists(p + ".index")]
        if recorded:
            return recorded
    found = []
    for path in tf.io.gfile.glob(os.path.join(directory, "ckpt-*.index")):
        m = _CKPT_RE.match(os.path.basename(path))
        if m:
            found.append((int(m.group(1)), path[: -len(".index")]))
    return [p for _, p in sorted(found, reverse=True)]


class Backup:
    """Mirror of run files at a `tf.io.gfile` URI (a mounted path, gs://, s3://, hdfs://...)."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        try:
            tf.io.gfile.makedirs(self.uri)
        except Exception as e:
            raise UserError(f"--backup-uri {uri}: cannot create it ({e}); give a writable location") from e

    def _join(self, rel: str) -> str:
        return f"{self.uri}/{rel}" if rel else self.uri

    def copy_file(self, local: str, rel: str) -> None:
        dst = self._join(rel)
        tf.io.gfile.makedirs(os.path.dirname(dst))
        tmp = dst + ".tmp-backup"
        tf.io.gfile.copy(local, tmp, overwrite=True)
        tf.io.gfile.rename(tmp, dst, overwrite=True)

    def copy_tree(self, local_dir: str, rel: str) -> None:
        for root, _dirs, files in os.walk(local_dir):
            sub = os.path.relpath(root, local_dir)
            for name in sorted(files):
                r = rel if sub == "." else f"{rel}/{sub}"
                self.copy_file(os.path.join(root, name), f"{r}/{name}")

    def sync_checkpoints(self, local_dir: str, prefixes: list[str], rel: str = "checkpoints") -> None:
        """Copy the managed checkpoints that are not there yet, then the state file, then prune."""
        dst_dir = self._join(rel)
        tf.io.gfile.makedirs(dst_dir)
        keep = set()
        for prefix in prefixes:
            for path in tf.io.gfile.glob(prefix + ".*"):
                name = os.path.basename(path)
                keep.add(name)
                if not tf.io.gfile.exists(f"{dst_dir}/{name}"):
                    self.copy_file(path, f"{rel}/{name}")
        state = os.path.join(local_dir, STATE_FILE)
        if os.path.exists(state):  # last: the backup points only at fully copied checkpoints
            self.copy_file(state, f"{rel}/{STATE_FILE}")
        for path in tf.io.gfile.glob(f"{dst_dir}/ckpt-*"):
            if os.path.basename(path) not in keep and not path.endswith(".tmp-backup"):
                tf.io.gfile.remove(path)


class CheckpointKeeper:
    """Saves and restores the whole training state in `directory` (normally `<run_dir>/checkpoints`).

    `items` is the dict for `tf.train.Checkpoint` (trainer.checkpoint_items() plus loop state); every
    variable in it must exist before `restore` (build the optimizers first, or their slots are lost).
    Non-chief workers of a multi-worker job must take part in saving (the save is collective) but
    write to a private temporary directory that is deleted afterwards.
    """

    def __init__(self, items: dict, directory: str, *, keep: int | None = 5, chief: bool = True,
                 backup: Backup | None = None, backup_rel: str = "checkpoints"):
        if keep is not None and keep < 1:
            raise UserError(f"--keep {keep}: keep at least 1 checkpoint")
        self.items = dict(items)
        self.directory = directory
        self.chief = chief
        self.backup = backup if chief else None
        self.backup_rel = backup_rel
        self.checkpoint = tf.train.Checkpoint(**self.items)
        self._tmpdir = None
        save_dir = directory
        if not chief:
            self._tmpdir = tempfile.mkdtemp(prefix="sg2ada-worker-ckpt-")
            save_dir = self._tmpdir
        else:
            tf.io.gfile.makedirs(directory)
            # A save killed midway leaves its shards in `ckpt-N_temp/`; the state file never named them.
            for stale in glob.glob(os.path.join(directory, "ckpt-*_temp")):
                shutil.rmtree(stale, ignore_errors=True)
        self.manager = tf.train.CheckpointManager(self.checkpoint, save_dir, max_to_keep=keep)

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def save(self) -> str:
        path = self.manager.save()
        if self.backup is not None:
            self.backup.sync_checkpoints(self.directory, self.manager.checkpoints, self.backup_rel)
        if self._tmpdir is not None:  # the chief's copy is the real one
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            os.makedirs(self._tmpdir, exist_ok=True)
        return path

    def restore(self, directory: str | None = None, *, require: bool = False) -> str | None:
        """Restore the newest readable checkpoint of `directory` (default: ours); None if there is none.

        A checkpoint that cannot be read is skipped with a `CheckpointCorruptWarning`. A checkpoint
        that reads but does not fit the objects (another configuration) is a UserError: restoring an
        older one would not help.
        """
        directory = directory or self.directory
        candidates = list_checkpoints(directory)
        if not candidates:
            if require:
                raise UserError(f"--resume {directory}: no checkpoint found there")
            return None
        errors = []
        for path in candidates:
            status = None
            try:
                tf.train.list_variables(path)  # reads the index: fails on a damaged or missing one
                status = self.checkpoint.restore(path)
                status.assert_existing_objects_matched()
                status.expect_partial()  # values we no longer track (older layouts) are fine to leave
            except (AssertionError, ValueError) as e:  # readable, but made for other objects/shapes
                if status is not None:
                    status.expect_partial()  # silences TensorFlow's unmatched-value log at exit
                raise UserError(
                    f"--resume: checkpoint {path} does not match this run's networks or options ({_short(e)}); "
                    "resume with the options of the run that wrote it"
                ) from e
            except Exception as e:  # noqa: BLE001  (the reader raises many types on damaged files)
                errors.append(path)
                warnings.warn(f"checkpoint {path} is unreadable ({_short(e)}); trying an older one",
                              CheckpointCorruptWarning, stacklevel=2)
                continue
            return path
        raise UserError(f"--resume {directory}: every checkpoint there is unreadable ({', '.join(errors)}); "
                        "restore the directory from a backup (--backup-uri)")

    def close(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)


def _short(e: Exception) -> str:
    text = getattr(e, "message", None) or str(e)
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def preemption_handler(strategy, keeper: CheckpointKeeper, exit_code: int):
    """tf.distribute's preemption handler for multi-worker jobs (None otherwise).

    On a preemption notice it makes every worker save at the same step and exit with `exit_code`.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    resolver = strategy.cluster_resolver
    config = tf.distribute.experimental.TerminationConfig(exit_fn=lambda: os._exit(exit_code))
    return tf.distribute.experimental.PreemptionCheckpointHandler(
        resolver, keeper.manager, termination_config=config)


def orphaned_files(directory: str) -> list[str]:
    """Checkpoint files not recorded in the state file (left by a kill during a save)."""
    recorded = set(list_checkpoints(directory))
    out = []
    for path in glob.glob(os.path.join(directory, "ckpt-*")):
        prefix = re.sub(r"\.(index|data-\d+-of-\d+)$", "", path)
        if prefix not in recorded:
            out.append(path)
    return sorted(out)
