"""`sg2ada dataset` through the real dispatcher: exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sg2ada.cli.main import main


def _run(capsys, *argv):
    code = main(["dataset", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_builtin_then_refuse_then_force(tmp_path, capsys):
    dest = tmp_path / "shapes"
    code, out, _ = _run(capsys, "--source", "builtin:shapes", "--dest", dest, "--max-images", 16)
    assert code == 0 and "wrote 16 images 32x32x3, 3 class labels" in out
    assert json.loads((dest / "dataset.json").read_text())["count"] == 16

    code, _, err = _run(capsys, "--source", "builtin:shapes", "--dest", dest, "--max-images", 8)
    assert code == 2
    lines = err.strip().splitlines()
    assert lines == [f"error: --dest {dest} already holds a dataset; pass --force to replace it or choose another folder"]

    code, out, _ = _run(capsys, "--source", "builtin:shapes", "--dest", dest, "--max-images", 8, "--force")
    assert code == 0 and json.loads((dest / "dataset.json").read_text())["count"] == 8


def test_folder_with_options_and_skips(image_folder, tmp_path, capsys):
    (image_folder / "junk.png").write_bytes(b"junk")
    code, out, err = _run(capsys, "--source", image_folder, "--dest", tmp_path / "o", "--resolution", 4,
                          "--resize-filter", "box", "--channels", 1, "--encoding", "raw")
    assert code == 0 and "wrote 6 images 4x4x1" in out and "skipped 1" in out
    assert "skipped junk.png: not a decodable image" in err


@pytest.mark.parametrize("argv, needle", [
    (["--source", "{tmp}/missing"], "does not exist"),
    (["--source", "builtin:nope"], "unknown built-in dataset builtin:nope"),
    (["--source", "builtin:shapes", "--resolution", "48"], "power of two"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, argv, needle):
    argv = [a.format(tmp=tmp_path) for a in argv]
    code, _, err = _run(capsys, *argv, "--dest", tmp_path / "out")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and needle in err
    assert not (tmp_path / "out").exists()


def test_bad_option_value_is_an_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["dataset", "--source", "builtin:shapes", "--dest", str(tmp_path / "o"), "--channels", "2"])
    assert e.value.code == 2


def test_option_parsing_does_not_import_tensorflow():
    code = ("import sys; from sg2ada.cli import dataset; import argparse; "
            "dataset.add_arguments(argparse.ArgumentParser()); print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
