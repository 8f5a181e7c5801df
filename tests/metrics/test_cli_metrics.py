"""`sg2ada metrics`: options, one-line errors, and a run with the small feature networks and a toy
generator standing in for a loaded snapshot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from metrics_helpers import NpzSource, ToyGenerator
from sg2ada.cli import main as cli_main
from sg2ada.cli import metrics as cli_metrics
from sg2ada.metrics import metric_main
from sg2ada.networks.config import GeneratorConfig, MappingConfig
from sg2ada.networks.generator import Generator
from sg2ada.networks.snapshot import save_snapshot


@pytest.fixture
def fake_network(tmp_path, monkeypatch):
    run_dir = tmp_path / "00000-toy"
    run_dir.mkdir()
    snap = run_dir / "network-snapshot-000000"
    snap.mkdir()
    monkeypatch.setattr(cli_metrics, "_load_generator", lambda path: (ToyGenerator(), {"dataset": None}))
    return snap


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_help_lists_metrics(capsys):
    with pytest.raises(SystemExit):
        cli_main.main(["metrics", "--help"])
    out = capsys.readouterr().out
    assert "fid50k_full" in out and "--feature-net" in out


def test_unknown_metric_is_one_line(capsys, fake_network):
    assert cli_main.main(["metrics", "--network", str(fake_network), "--metrics", "fid5k"]) == 2
    assert "unknown metric" in _one_error_line(capsys)


def test_fid_without_data_is_one_line(capsys, fake_network):
    assert cli_main.main(["metrics", "--network", str(fake_network), "--metrics", "fid50k_full"]) == 2
    assert "--data" in _one_error_line(capsys)


def test_missing_feature_net_offline_is_one_line(capsys, fake_network, metric_env, npz_dataset):
    code = cli_main.main(["metrics", "--network", str(fake_network), "--data", str(npz_dataset), "--offline"])
    assert code == 2
    line = _one_error_line(capsys)
    assert "inception-2015-12-05.tgz" in line and "--feature-net" in line


def test_cli_run_writes_jsonl(capsys, fake_network, metric_env, npz_dataset, monkeypatch):
    monkeypatch.setattr(metric_main, "DatasetSource", lambda path: NpzSource.make(path))
    code = cli_main.main(["metrics", "--network", str(fake_network), "--data", str(npz_dataset),
                          "--metrics", "fid50k_full,is50k", "--num-gen", "8", "--batch", "4",
                          *sum((["--feature-net", p] for p in metric_env.feature_net), [])])
    assert code == 0, capsys.readouterr().err
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [r["metric"] for r in lines] == ["fid50k_full", "is50k"]
    assert np.isfinite(lines[0]["results"]["fid50k_full"]) and lines[0]["overrides"] == {"num_gen": 8}
    rec = json.loads((fake_network.parent / "metric-fid50k_full.jsonl").read_text())
    assert rec["snapshot_pkl"] == "network-snapshot-000000"
    assert set(lines[1]["results"]) == {"is50k_mean", "is50k_std"}


def test_unknown_feature_net_file_is_one_line(capsys, fake_network, tmp_path):
    weird = tmp_path / "model.bin"
    weird.write_bytes(b"x")
    assert cli_main.main(["metrics", "--network", str(fake_network), "--metrics", "is50k", "--feature-net", str(weird)]) == 2
    assert "not a known feature network" in _one_error_line(capsys)


def test_option_parsing_does_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys; from sg2ada.cli import main; p = main.build_parser(); "
            "p.parse_args(['metrics', '--network', 'x']); print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_cli_on_a_real_snapshot(capsys, metric_env, tmp_path):
    """A snapshot written by sg2ada.networks.snapshot, evaluated against builtin:shapes."""
    cfg = GeneratorConfig(z_dim=16, w_dim=16, c_dim=0, img_resolution=32,
                          mapping=MappingConfig(num_layers=1), channel_base=64, channel_max=8)
    G = Generator(cfg, name="G_ema")
    run_dir = tmp_path / "00003-shapes"
    run_dir.mkdir()
    snap = save_snapshot(run_dir / "network-snapshot-000001", None, None, G, dataset={"path": "builtin:shapes"})
    code = cli_main.main(["metrics", "--network", str(snap), "--metrics", "fid50k_full,ppl2_wend",
                          "--num-gen", "8", "--max-real", "32", "--num-samples", "4", "--batch", "8",
                          *sum((["--feature-net", p] for p in metric_env.feature_net), [])])
    assert code == 0, capsys.readouterr().err
    recs = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [r["metric"] for r in recs] == ["fid50k_full", "ppl2_wend"]
    assert all(np.isfinite(list(r["results"].values())).all() for r in recs)
    assert (run_dir / "metric-fid50k_full.jsonl").is_file() and (run_dir / "metric-ppl2_wend.jsonl").is_file()
