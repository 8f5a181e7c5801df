"""Run directories: NVIDIA-style numbering and description, options file, console tee, time format."""

from __future__ import annotations

import os
import sys

import pytest

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
    rd.write_options(str(tmp_path), {"a": 1, "b": {"c": [1, 2]}})
    assert rd.read_options(str(tmp_path)) == {"a": 1, "b": {"c": [1, 2]}}
    assert rd.is_run_dir(str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == [rd.OPTIONS_FILE]  # no temp file left behind


@pytest.mark.parametrize("sec,text", [(0.4, "0s"), (42, "42s"), (187, "3m 07s"), (7509, "2h 05m 09s"),
                                      (93780, "1d 02h 03m")])
def test_format_time(sec, text):
    assert rd.format_time(sec) == text


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
