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
import importlib
import os
import sys

from sg2ada.errors import UserError

# command name -> module under sg2ada.cli; a module that is not there (yet) is left out of the menu.
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
    "doctor": "doctor",
}


def _load_commands():
    mods = {}
    for name, mod in COMMANDS.items():
        try:
            mods[name] = importlib.import_module(f"sg2ada.cli.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"sg2ada.cli.{mod}":
                raise
    return mods


def build_parser():
    parser = argparse.ArgumentParser(
        prog="sg2ada", description="StyleGAN2-ADA in TensorFlow 2: train, convert, generate, evaluate."
    )
    from sg2ada import __version__

    parser.add_argument("--version", action="version", version=f"sg2ada {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in _load_commands().items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.main)
    return parser


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ banner out of the CLI
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
