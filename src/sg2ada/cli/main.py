"""`sg2ada` command dispatcher.

Each command lives in its own module `sg2ada.cli.<module>` exposing
    HELP: str                        one line for `sg2ada --help`
    add_arguments(parser) -> None    declares the options (must not import TensorFlow)
    main(args) -> int                runs the command (imports TensorFlow lazily)
so that `sg2ada --help` and option errors answer instantly. A `UserError` raised anywhere becomes
one `error: ...` line and exit status 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import re
import signal
import sys
import warnings

from sg2ada.console import import_tensorflow_quietly
from sg2ada.data.remote import remove_copies
from sg2ada.errors import Stopped, UserError
from sg2ada.version import __version__

# command name -> its module under sg2ada.cli
COMMANDS = {
    "train": "train",
    "dataset": "dataset",
    "convert": "convert",
    "augment-preview": "augment_preview",
    "metrics": "metrics",
    "generate": "generate",
    "style-mix": "style_mix",
    "interpolate": "interpolate",
    "project": "project",
    "export": "export",
    "report": "report",
    "doctor": "doctor",
}


def _load_commands():
    return {name: importlib.import_module(f"sg2ada.cli.{mod}") for name, mod in COMMANDS.items()}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="sg2ada", description="StyleGAN2-ADA in TensorFlow 2: train, convert, generate, evaluate."
    )
    parser.add_argument("--version", action="version", version=f"sg2ada {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in _load_commands().items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.main)
    return parser


def main(argv=None) -> int:
    # From the first moment, a scheduler's SIGTERM (or ^C) ends the command with one line: at once
    # while nothing exists yet, by an exception once the command runs (its cleanup must run), and
    # the training loop takes the signals over once it has state to save.
    global _stderr_fd
    _stderr_fd = os.dup(2)  # TensorFlow's import below points fd 2 elsewhere for a while
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_at_start)
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ info logs out of the CLI
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "_run", None):
            parser.print_help()
            return 2
        warnings.showwarning = _one_line_warning
        tf = import_tensorflow_quietly()  # every command needs it; import it here so its banner can be dropped
    finally:
        os.close(_stderr_fd)
        _stderr_fd = None
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # the machine's, not the program's: a full disk, a read-only folder, ...
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}; {_OS_FIX.get(e.errno, 'check the path and try again')}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        # TensorFlow's file errors (a full disk under a checkpoint, a read-only run directory) carry
        # the C++ message; anything else is a bug and keeps its traceback.
        if tf is not None and isinstance(e, (tf.errors.ResourceExhaustedError, tf.errors.PermissionDeniedError,
                                               tf.errors.DataLossError)):
            # TensorFlow prefixes the op's internal name and appends it: neither helps a user.
            msg = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*", "", str(getattr(e, "message", e)))
            msg = msg.strip().splitlines()[0] if msg.strip() else type(e).__name__
            print(f"error: {msg}; free disk space or fix the permissions, then resume", file=sys.stderr)
            return 2
        raise
    finally:
        remove_copies()  # local copies of bucket datasets: nothing of the data stays on the machine


_OS_FIX = {errno.ENOSPC: "free disk space, then resume (the last checkpoint is intact)",
           errno.EACCES: "make it writable or choose another --outdir",
           errno.EROFS: "the filesystem is read-only: choose another --outdir",
           errno.EPERM: "make it writable or choose another --outdir"}


_stderr_fd: int | None = None


def _exit_at_start(signum, frame):
    os.write(2 if _stderr_fd is None else _stderr_fd,
             f"error: stopped by {signal.Signals(signum).name} before anything was done; run the command again\n"
             .encode())
    os._exit(Stopped.exit_code)  # no exception: an import in progress could wrap it or swallow it


def _stop(signum, frame):
    raise Stopped(f"stopped by {signal.Signals(signum).name} before anything was saved; run the command again")


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=file or sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
