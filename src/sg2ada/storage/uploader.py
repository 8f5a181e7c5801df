"""`Uploader`: one background thread that runs upload jobs in order and never gives up on one.

A job is a function doing one logical upload (a file, a snapshot directory, a checkpoint with its
state file last) under a key. A job submitted while another with the same key is still waiting
replaces it (the newer one covers it), so a store that is down for hours does not build a queue.
A failed job goes back to the front of the queue and is retried after an exponentially growing
pause (capped); the first failure of an outage prints one warning line and the recovery one more.
A job whose local file has gone (`LocalFileMissing`, e.g. a checkpoint pruned meanwhile) is
dropped. The caller never waits, except in `flush`/`close`, which are bounded by a timeout.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable

from sg2ada.storage.store import LocalFileMissing, short_error


class Uploader:
    """Runs `submit`ted jobs on a daemon thread; see the module docstring."""

    def __init__(self, label: str, *, retry_sec: float = 1.0, max_retry_sec: float = 60.0,
                 log: Callable[[str], None] = print):
        self.label = label  # the destination, for messages
        self.retry_sec = retry_sec
        self.max_retry_sec = max_retry_sec
        self.log = log
        self._pending: collections.OrderedDict[str, Callable[[], None]] = collections.OrderedDict()
        self._busy = False
        self._stop = False
        self._cond = threading.Condition()
        self.failures = 0  # consecutive failed attempts (0 when the store works)
        self._thread = threading.Thread(target=self._work, name="sg2ada-uploader", daemon=True)
        self._thread.start()

    def submit(self, key: str, job: Callable[[], None]) -> None:
        with self._cond:
            if self._stop:
                raise RuntimeError("Uploader is closed")
            self._pending.pop(key, None)
            self._pending[key] = job
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Jobs not finished yet (waiting or running)."""
        with self._cond:
            return len(self._pending) + int(self._busy)

    def flush(self, timeout_sec: float | None = None) -> bool:
        """Wait until every submitted job is done; False if `timeout_sec` passed first."""
        deadline = None if timeout_sec is None else time.monotonic() + timeout_sec
        with self._cond:
            while self._pending or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout_sec: float | None = None) -> bool:
        """Flush (bounded by `timeout_sec`), then stop the thread; False if jobs were left undone."""
        done = self.flush(timeout_sec)
        with self._cond:
            left = len(self._pending) + int(self._busy)
            self._stop = True
            self._cond.notify_all()
        if done:
            self._thread.join()
        else:
            self.log(f"warning: backup to {self.label}: {left} upload(s) not finished after {timeout_sec:g} s; "
                     "the local run directory has everything")
        return done

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                key, job = self._pending.popitem(last=False)
                self._busy = True
            try:
                job()
            except LocalFileMissing:
                pass  # superseded: a newer job (or none at all) covers it
            except Exception as e:  # noqa: BLE001  (never let a store error reach training)
                self._failed(key, job, e)
                continue
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
            if self.failures:
                self.log(f"backup to {self.label} works again after {self.failures} failed attempt(s)")
                self.failures = 0

    def _failed(self, key: str, job: Callable[[], None], e: Exception) -> None:
        self.failures += 1
        if self.failures == 1:
            self.log(f"warning: backup to {self.label} failed ({short_error(e)}); training goes on, the run "
                     "directory keeps everything and the upload is retried in the background")
        with self._cond:
            if key not in self._pending:  # a newer job with this key replaces the failed one
                self._pending[key] = job
                self._pending.move_to_end(key, last=False)
            self._busy = False  # it waits in the queue again
            self._cond.notify_all()
            delay = min(self.retry_sec * 2 ** (self.failures - 1), self.max_retry_sec)
            deadline = time.monotonic() + delay
            while not self._stop and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
