"""The documentation's commands are ones the CLI accepts.

Every `sg2ada ...` line in a plain code block of README.md and docs/*.md is parsed by the real CLI
parser; every `sg2ada train ...` line is also run with `--dry-run` (it resolves the options against
a real dataset and writes nothing). Paths under /data and /runs, the container volumes the docs use,
are mapped to a temporary folder holding a small dataset of the size the docs name.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from sg2ada.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def doc_commands() -> list[tuple[str, int, str]]:
    """(file name, line number, command) for each `sg2ada` line inside ``` blocks (not yaml/json).

    An `export VAR=...` line earlier in the same block is kept in front of the command, as
    `VAR=... sg2ada ...`, because the command depends on it (TF_CONFIG for multi-host runs).
    """
    found = []
    for doc in DOCS:
        in_block, lang, exports = False, "", []
        for lineno, line in enumerate(doc.read_text().splitlines(), 1):
            fence = re.match(r"^\s*```(\w*)", line)
            if fence:
                in_block, lang, exports = (not in_block), fence.group(1), []
                continue
            if not in_block or lang not in ("", "sh", "bash", "console"):
                continue
            if line.strip().startswith("export "):
                exports.append(line.strip()[len("export "):])
            elif line.strip().startswith("sg2ada "):
                found.append((doc.name, lineno, " ".join([*exports, line.strip()])))
    return found


def split_env(command: str) -> tuple[dict, list[str]]:
    """`A=1 B=2 sg2ada x y` -> ({A: 1, B: 2}, [x, y])."""
    words = shlex.split(command)
    env = {}
    while "=" in words[0] and words[0] != "sg2ada":
        k, _, v = words.pop(0).partition("=")
        env[k] = v
    assert words[0] == "sg2ada", command
    return env, words[1:]


COMMANDS = doc_commands()


def test_docs_have_commands():
    names = {split_env(c)[1][0] for _, _, c in COMMANDS}
    assert {"train", "dataset", "doctor"} <= names, names


@pytest.mark.parametrize("where,lineno,command", COMMANDS, ids=[f"{w}:{n}" for w, n, _ in COMMANDS])
def test_command_parses(where, lineno, command):
    argv = split_env(command)[1]
    try:
        build_parser().parse_args(argv)
    except SystemExit as e:  # argparse reports unknown options this way
        pytest.fail(f"{where}:{lineno}: the CLI rejects `{command}` (exit {e.code})")


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """A temporary /data with the datasets the docs name, and an empty /runs."""
    from PIL import Image

    from sg2ada.data.tool import convert_dataset

    root = tmp_path_factory.mktemp("volumes")
    raw = root / "data" / "raw-photos"
    raw.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for i in range(4):
        Image.fromarray(rng.randint(0, 255, (256, 256, 3), dtype=np.uint8)).save(raw / f"{i}.png")
    convert_dataset(str(raw), root / "data" / "photos256", resolution=256)
    (root / "runs").mkdir()
    return root


def _localise(argv: list[str], root: Path) -> list[str]:
    return [re.sub(r"^/(data|runs)\b", lambda m: f"{root}/{m.group(1)}", a) for a in argv]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback_tf_config(tf_config: str) -> str:
    """The docs' TF_CONFIG with each worker address replaced by a free port on 127.0.0.1."""
    import json

    spec = json.loads(tf_config)
    spec["cluster"] = {job: [f"127.0.0.1:{_free_port()}" for _ in hosts] for job, hosts in spec["cluster"].items()}
    return json.dumps(spec)


TRAIN = [(w, n, c) for w, n, c in COMMANDS if split_env(c)[1][0] == "train"]


@pytest.mark.parametrize("where,lineno,command", TRAIN, ids=[f"{w}:{n}" for w, n, _ in TRAIN])
def test_train_command_dry_runs(where, lineno, command, volumes, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.chdir(volumes)  # relative paths in the README (data/..., runs) resolve under the volumes too
    env, argv = split_env(command)
    argv = _localise(argv, volumes)
    resume = argv[argv.index("--resume") + 1] if "--resume" in argv else None
    if resume and re.match(r"\d{5}-", Path(resume).name):
        _fake_run_dir(Path(resume), volumes)
    before = sorted(p.relative_to(volumes) for p in volumes.rglob("*"))
    if "TF_CONFIG" in env:
        # A multi-worker strategy starts a server that lives as long as its process: use a fresh one,
        # with the docs' cluster moved onto loopback ports.
        import os
        import subprocess
        import sys

        proc = subprocess.run([sys.executable, "-m", "sg2ada", *argv, "--dry-run"], capture_output=True, text=True,
                              cwd=volumes,
                              timeout=120, env=dict(os.environ, TF_CONFIG=_loopback_tf_config(env["TF_CONFIG"])))
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    else:
        rc = main([*argv, "--dry-run"])
        out, err = capsys.readouterr()
    assert rc == 0, f"{where}:{lineno}: `{command} --dry-run` exited {rc}:\n{err[-2000:]}"
    assert "Dry run" in out
    assert sorted(p.relative_to(volumes) for p in volumes.rglob("*")) == before, "--dry-run wrote files"


def _fake_run_dir(run_dir: Path, volumes: Path) -> None:
    """A run directory as `sg2ada train` leaves it before its first checkpoint, for --resume lines."""
    if run_dir.exists():
        return
    from sg2ada.training.options import resolve_options
    from sg2ada.training.run_dir import CHECKPOINT_SUBDIR, write_options

    opts = resolve_options(data=str(volumes / "data" / "photos256"), cfg="auto")
    (run_dir / CHECKPOINT_SUBDIR).mkdir(parents=True)
    write_options(str(run_dir), opts)
