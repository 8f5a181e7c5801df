"""Run directories: NVIDIA-style numbering and description, options file, console tee, the run lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from sg2ada.errors import UserError
from sg2ada.training import run_dir as rd


def test_desc_follows_nvidia_order_and_spelling():
    # metfaces transfer-learning example from NVIDIA's README
    assert rd.run_desc("/d/metfaces.zip", cfg="paper1024", mirror=True, resume="/x/ffhq.pkl") == \
        "metfaces-mirror-paper1024-resumecustom"
    assert rd.run_desc("/d/mydata/", cfg="auto", gpus=2) == "mydata-auto2"
    assert rd.run_desc("/d/c10.zip", cfg="cifar", cond=True, subset=100, gamma=10.0, kimg=500, batch=32,
                       aug="fixed", p=0.2, augpipe="bg", freezed=4) == \
        "c10-cond-subset100-cifar-gamma10-kimg500-batch32-fixed-p0.2-bg-freezed4"
    assert rd.run_desc("builtin:shapes", cfg="tiny", target=0.5) == "shapes-tiny-target0.5"


def test_run_numbering_skips_files_and_takes_max_plus_one(tmp_path):
    assert rd.next_run_dir(str(tmp_path / "none"), "x").endswith("00000-x")
    (tmp_path / "00000-a").mkdir()
    (tmp_path / "00003-b").mkdir()
    (tmp_path / "00009-file").write_text("not a dir")
    (tmp_path / "notes").mkdir()
    assert os.path.basename(rd.next_run_dir(str(tmp_path), "c")) == "00004-c"
    made = rd.create_run_dir(str(tmp_path), "c")
    assert os.path.isdir(made) and os.path.basename(made) == "00004-c"
    assert os.path.basename(rd.create_run_dir(str(tmp_path), "c")) == "00005-c"


def test_latest_run_dir_needs_checkpoints(tmp_path):
    (tmp_path / "00001-a" / "checkpoints").mkdir(parents=True)
    (tmp_path / "00002-b").mkdir()
    assert rd.latest_run_dir(str(tmp_path)).endswith("00001-a")
    assert rd.latest_run_dir(str(tmp_path / "missing")) is None


def test_options_roundtrip_and_atomic_write(tmp_path):
    from sg2ada.training.options import resolve_options

    opts = resolve_options(resolution=16, img_channels=3, label_dim=0, cfg="tiny", metrics="none")
    rd.write_options(str(tmp_path), opts)
    assert rd.read_options(str(tmp_path)) == opts
    assert rd.is_run_dir(str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == [rd.OPTIONS_FILE]  # no temp file left behind


def test_truncated_options_file_is_one_line_naming_it(tmp_path):
    (tmp_path / rd.OPTIONS_FILE).write_text('{"data": "x", "resol')
    with pytest.raises(UserError, match="training_options.json is not valid JSON") as e:
        rd.read_options(str(tmp_path))
    assert str(tmp_path) in str(e.value)


def test_run_lock_admits_one_writer_and_takes_over_a_dead_ones(tmp_path, capsys):
    with rd.run_lock(str(tmp_path)):
        lock = json.loads((tmp_path / rd.LOCK_FILE).read_text())
        assert lock["pid"] == os.getpid() and lock["host"] == socket.gethostname()
        with pytest.raises(UserError, match=f"being trained by process {os.getpid()}"):
            with rd.run_lock(str(tmp_path)):
                pass
    assert not (tmp_path / rd.LOCK_FILE).exists()  # released

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / rd.LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout),
                                                     "started": "earlier"}))
    with rd.run_lock(str(tmp_path)):
        assert "taking over the lock" in capsys.readouterr().out
    (tmp_path / rd.LOCK_FILE).write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": "earlier"}))
    with pytest.raises(UserError, match="locked by process 1 on elsewhere.*delete"):
        with rd.run_lock(str(tmp_path)):
            pass


def test_tee_console_copies_and_restores(tmp_path, capsys):
    log = tmp_path / "log.txt"
    out_before = sys.stdout
    with rd.tee_console(str(log)) as err:
        print("hello")
        print("oops", file=sys.stderr)
        assert err is not sys.stderr  # progress bars bypass the log
    assert sys.stdout is out_before
    with rd.tee_console(str(log)):
        print("again")  # appended, as a resumed run does
    assert log.read_text().splitlines() == ["hello", "oops", "again"]
    captured = capsys.readouterr()
    assert "hello" in captured.out and "oops" in captured.err
