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

`--backup-uri` mirrors the run (checkpoints, snapshots, the run's own files) to remote storage
(`sg2ada.storage`: S3, GCS, Azure, any fsspec location) from a background thread; `fetch_run` and
`latest_run` bring a backed-up run back for `--resume`. The backup's checkpoint state file is
uploaded after the checkpoint files it names, so the backup is as crash-safe as the local copy.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import tempfile
import warnings

import tensorflow as tf

from sg2ada.errors import UserError
from sg2ada.networks.snapshot import META_FILE as SNAPSHOT_META_FILE
from sg2ada.storage import Store, Uploader, open_store
from sg2ada.training.monitor import STATS_FILE
from sg2ada.training.run_dir import CHECKPOINT_SUBDIR, RUN_ID, LOG_FILE, OPTIONS_FILE, atomic_write_text

STATE_FILE = "checkpoint"  # CheckpointManager's state file name
RUN_FILES = (OPTIONS_FILE, STATS_FILE, LOG_FILE)  # mirrored every tick, fetched on resume
# A checkpoint file: name ckpt-N, then index or data shard i of n.
_CKPT_FILE_RE = re.compile(r"^(?P<name>ckpt-(?P<n>\d+))\.(?:index|data-(?P<shard>\d+)-of-(?P<shards>\d+))$")
_STATE_PATH_RE = re.compile(r'^(model_checkpoint_path|all_model_checkpoint_paths): "(.*)"$', re.M)


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
        m = _CKPT_FILE_RE.match(os.path.basename(path))
        if m and m["shard"] is None:
            found.append((int(m["n"]), path[: -len(".index")]))
    return [p for _, p in sorted(found, reverse=True)]


class Backup:
    """Mirror of a run directory at a remote URI (see `sg2ada.storage`), uploaded in the background.

    The constructor checks that it can write there (a UserError otherwise). Every method returns at
    once; one thread uploads, in order, retrying until the store answers. Checkpoint files go up
    data first and index next, then the state file (naming only checkpoints complete there), then
    checkpoints beyond --keep are deleted there; a snapshot's snapshot.json goes up after its
    weights. A reader of the bucket never takes a half-uploaded checkpoint or snapshot for whole.
    """

    def __init__(self, uri: str, *, flush_timeout_sec: float = 600.0, retry_sec: float = 1.0,
                 max_retry_sec: float = 60.0, log=print):
        self.store = open_store(uri, what="--backup-uri")
        self.store.check_access()
        self.uri = self.store.uri
        self.flush_timeout_sec = flush_timeout_sec
        self.uploader = Uploader(self.uri, retry_sec=retry_sec, max_retry_sec=max_retry_sec, log=log)
        self._uploaded: set[str] = set()  # checkpoints this process uploaded completely

    def copy_file(self, local: str, rel: str) -> None:
        self.uploader.submit(f"file:{rel}", functools.partial(self.store.put_file, local, rel))

    def copy_run_files(self, run_dir: str) -> None:
        """The run's own files (options, stats, log), as they are when the upload runs."""
        for name in RUN_FILES:
            path = os.path.join(run_dir, name)
            if os.path.exists(path):
                self.copy_file(path, name)

    def copy_tree(self, local_dir: str, rel: str) -> None:
        """A network snapshot directory; its snapshot.json last."""
        self.uploader.submit(f"tree:{rel}", functools.partial(
            self.store.put_tree, local_dir, rel, last=(SNAPSHOT_META_FILE,)))

    def sync_checkpoints(self, local_dir: str, prefixes: list[str], rel: str = CHECKPOINT_SUBDIR) -> None:
        """Mirror the managed checkpoints `prefixes` (newest last) and the state file that names them."""
        try:
            with open(os.path.join(local_dir, STATE_FILE), "rb") as f:
                state = f.read()  # read now: by upload time it may name a newer checkpoint
        except FileNotFoundError:
            return
        names = [os.path.basename(p) for p in prefixes]
        self.uploader.submit(f"checkpoints:{rel}",
                             functools.partial(self._sync_checkpoints, local_dir, names, state, rel))

    def _sync_checkpoints(self, local_dir: str, names: list[str], state: bytes, rel: str) -> None:
        remote = self.store.list(rel)
        # Complete there: named by the backup's state file, or uploaded by us. Other files of the
        # same name may be left by an interrupted upload of an earlier session, so they go up again.
        complete = set(self._uploaded)
        if STATE_FILE in remote:
            complete.update(_recorded_names(self.store.read_bytes(f"{rel}/{STATE_FILE}").decode("utf-8", "replace")))
        for name in names:
            if name in complete and f"{name}.index" in remote:
                continue
            data = sorted(glob.glob(os.path.join(glob.escape(local_dir), f"{name}.data-*")))
            for path in [*data, os.path.join(local_dir, f"{name}.index")]:
                self.store.put_file(path, f"{rel}/{os.path.basename(path)}")
            self._uploaded.add(name)
        self.store.put_bytes(state, f"{rel}/{STATE_FILE}")
        keep = set(names)
        stale = [f for f in remote if f.startswith("ckpt-") and
                 ((m := _CKPT_FILE_RE.match(f)) is None or m["name"] not in keep)]
        self.store.delete([f"{rel}/{f}" for f in stale])

    def flush(self, timeout_sec: float | None = None) -> bool:
        """Wait for the uploads submitted so far; False if `timeout_sec` passed first."""
        return self.uploader.flush(timeout_sec)

    def close(self, timeout_sec: float | None = None) -> bool:
        """Finish the uploads (at most `timeout_sec`, default flush_timeout_sec) and stop the thread."""
        return self.uploader.close(self.flush_timeout_sec if timeout_sec is None else timeout_sec)


def _recorded_names(state_text: str) -> list[str]:
    """Checkpoint names in a CheckpointManager state file's text, newest first."""
    latest, recorded = None, []
    for field, path in _STATE_PATH_RE.findall(state_text):
        name = path.replace("\\", "/").rsplit("/", 1)[-1]
        if field == "model_checkpoint_path":
            latest = name
        elif name not in recorded:
            recorded.append(name)
    recorded.reverse()
    if latest is not None:
        recorded = [latest] + [n for n in recorded if n != latest]
    return recorded


def _complete_checkpoint(store: Store, rel: str) -> tuple[str, list[str]] | None:
    """The newest checkpoint under `rel` of `store` that is complete there, as (name, its files)."""
    files = store.list(rel)
    if STATE_FILE not in files:
        return None
    for name in _recorded_names(store.read_bytes(f"{rel}/{STATE_FILE}").decode("utf-8", "replace")):
        shards = {}
        for f in files:
            m = _CKPT_FILE_RE.match(f)
            if m and m["name"] == name and m["shard"] is not None:
                shards[int(m["shard"])] = (f, int(m["shards"]))
        total = {n for _, n in shards.values()}
        if f"{name}.index" in files and len(total) == 1 and sorted(shards) == list(range(total.pop())):
            return name, [shards[i][0] for i in sorted(shards)] + [f"{name}.index"]
    return None


def fetch_run(uri: str, local_dir: str) -> str | None:
    """Download a backed-up run for `--resume`: its RUN_FILES and its newest complete checkpoint.

    Writes `local_dir/<run file>` and `local_dir/checkpoints/` (data, index, then a state file naming
    only that checkpoint, so an interrupted fetch never leaves a state file pointing at missing
    files). Returns the local checkpoint prefix, or None if the backup has no complete checkpoint.
    """
    store = open_store(uri, what="--resume")
    present = store.children()
    if not present:
        raise UserError(f"--resume {uri}: nothing there; give the backup of one run (<--backup-uri>/<run name>)")
    for name in RUN_FILES:
        if name in present:
            store.get_file(name, os.path.join(local_dir, name))
    found = _complete_checkpoint(store, CHECKPOINT_SUBDIR)
    if found is None:
        return None
    name, files = found
    ckpt_dir = os.path.join(local_dir, CHECKPOINT_SUBDIR)
    for f in files:
        store.get_file(f"{CHECKPOINT_SUBDIR}/{f}", os.path.join(ckpt_dir, f))
    atomic_write_text(os.path.join(ckpt_dir, STATE_FILE),  # CheckpointManager's text format
                      f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')
    return os.path.join(ckpt_dir, name)


def latest_run(uri: str) -> str | None:
    """The URI of the highest-numbered run under a `--backup-uri` that has a complete checkpoint."""
    store = open_store(uri, what="--backup-uri")
    runs = sorted(((int(m.group(1)), n) for n in store.children() if (m := RUN_ID.match(n))), reverse=True)
    for _, name in runs:
        if _complete_checkpoint(store, f"{name}/{CHECKPOINT_SUBDIR}") is not None:
            return store.url(name)
    return None


class CheckpointKeeper:
    """Saves and restores the whole training state in `directory` (normally `<run_dir>/checkpoints`).

    `items` is the dict for `tf.train.Checkpoint` (trainer.checkpoint_items() plus loop state); every
    variable in it must exist before `restore` (build the optimizers first, or their slots are lost).
    Non-chief workers of a multi-worker job must take part in saving (the save is collective) but
    write to a private temporary directory that is deleted afterwards.
    """

    def __init__(self, items: dict, directory: str, *, keep: int | None = 5, chief: bool = True,
                 backup: Backup | None = None, backup_rel: str = CHECKPOINT_SUBDIR):
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
            # A save killed midway leaves its shards in `ckpt-N_temp/`, which the state file never named,
            # and a state file write stopped by a full disk leaves its `checkpoint.tmp*`.
            for stale in glob.glob(os.path.join(glob.escape(directory), "ckpt-*_temp")):
                shutil.rmtree(stale, ignore_errors=True)
            for stale in glob.glob(os.path.join(glob.escape(directory), "checkpoint.tmp*")):
                os.remove(stale)
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

    def close(self, backup_timeout_sec: float | None = None) -> None:
        """Remove a worker's temporary directory; wait for the backup uploads (bounded) and stop them."""
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        if self.backup is not None:
            self.backup.close(backup_timeout_sec)


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
