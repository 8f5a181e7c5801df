"""`--resume` transfer sources: named NVIDIA networks, URLs and local paths, downloaded once into the cache.

Nothing here touches the network: NVIDIA's source table is pointed at a `file://` folder serving a real
(small) TF1 pickle from the reference material, and `urllib.request.urlopen` is wrapped to count, or
forbid, downloads.
"""

from __future__ import annotations

import os
import shutil
import urllib.request

import numpy as np
import pytest

from sg2ada.cli.main import main as cli
from sg2ada.errors import UserError
from sg2ada.training import transfer

NAME = "ffhq256"
FILENAME = transfer.TRANSFER_SOURCES[NAME]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache, online (the test conftest sets SG2ADA_OFFLINE=1 for everything else)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("SG2ADA_CACHE", str(root))
    monkeypatch.delenv("SG2ADA_OFFLINE", raising=False)
    return root / "transfer-sources"


@pytest.fixture
def server(tmp_path, monkeypatch, reference_dir):
    """A folder standing in for NVIDIA's CDN, holding the reference TF1 pickle under the ffhq256 file name."""
    root = tmp_path / "cdn"
    root.mkdir()
    shutil.copyfile(reference_dir / "tf1_small.pkl", root / FILENAME)
    monkeypatch.setattr(transfer, "TRANSFER_BASE_URL", root.as_uri() + "/")
    return root


@pytest.fixture
def downloads(monkeypatch):
    """The URLs fetched; `downloads.forbid()` makes any further fetch fail the test."""
    real = urllib.request.urlopen
    seen = []

    def counting(url, *a, **kw):
        seen.append(url)
        if getattr(counting, "forbidden", False):
            raise AssertionError(f"unexpected download of {url}")
        return real(url, *a, **kw)

    counting.forbid = lambda: setattr(counting, "forbidden", True)
    counting.seen = seen
    monkeypatch.setattr(urllib.request, "urlopen", counting)
    return counting


def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_named_source_downloads_once_then_the_cache_answers(cache, server, downloads, monkeypatch):
    path = transfer.resolve_resume_weights(NAME)
    assert path == str(cache / FILENAME)
    assert downloads.seen == [(server / FILENAME).as_uri()]
    assert (cache / FILENAME).read_bytes() == (server / FILENAME).read_bytes()
    assert sorted(os.listdir(cache)) == [FILENAME, FILENAME + ".sha256"]  # no .part left behind

    downloads.forbid()
    (server / FILENAME).unlink()  # and the source is gone: only the cache can answer now
    assert transfer.resolve_resume_weights(NAME) == path
    monkeypatch.setenv("SG2ADA_OFFLINE", "1")
    assert transfer.resolve_resume_weights(NAME) == path
    assert transfer.resolve_resume_weights(NAME, download=False) == path
    assert len(downloads.seen) == 1
    assert "cached copy" in transfer.describe_resume(NAME)

    from sg2ada import load_network

    nets = load_network(path)
    assert nets.G_ema.config.img_resolution == 32


def test_a_file_put_in_the_cache_by_hand_needs_no_network(cache, downloads, reference_dir, monkeypatch):
    monkeypatch.setenv("SG2ADA_OFFLINE", "1")
    cache.mkdir(parents=True)
    shutil.copyfile(reference_dir / "tf1_small.pkl", cache / FILENAME)
    assert transfer.resolve_resume_weights(NAME) == str(cache / FILENAME)
    assert downloads.seen == []


def test_offline_error_names_the_url_and_where_to_put_the_file(cache, server, downloads, monkeypatch):
    monkeypatch.setenv("SG2ADA_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        transfer.resolve_resume_weights(NAME)
    msg = one_line(e)
    assert (server / FILENAME).as_uri() in msg and str(cache / FILENAME) in msg
    assert "offline" in msg and "local path" in msg
    assert downloads.seen == [] and not cache.exists()


def test_the_real_table_points_at_nvidias_cdn(cache, monkeypatch):
    monkeypatch.setenv("SG2ADA_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        transfer.resolve_resume_weights("lsundog256")
    msg = one_line(e)
    assert ("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada/pretrained/transfer-learning-source-nets/"
            "lsundog-res256-paper256-kimg100000-noaug.pkl") in msg
    assert str(cache / "lsundog-res256-paper256-kimg100000-noaug.pkl") in msg


@pytest.mark.parametrize("payload", ["html", "truncated"])
def test_a_bad_download_is_refused_and_leaves_nothing(cache, server, downloads, reference_dir, payload):
    data = (reference_dir / "tf1_small.pkl").read_bytes()
    (server / FILENAME).write_bytes(b"<html>404 not found</html>" if payload == "html" else data[: len(data) // 2])
    with pytest.raises(UserError) as e:
        transfer.resolve_resume_weights(NAME)
    msg = one_line(e)
    assert "not a valid network pickle" in msg and str(cache / FILENAME) in msg
    assert os.listdir(cache) == []
    assert len(downloads.seen) == 1


def test_a_failed_download_names_url_and_destination(cache, server, downloads):
    (server / FILENAME).unlink()
    with pytest.raises(UserError) as e:
        transfer.resolve_resume_weights(NAME)
    msg = one_line(e)
    assert "download failed" in msg and (server / FILENAME).as_uri() in msg and str(cache / FILENAME) in msg
    assert not (cache / FILENAME).exists()


def test_a_url_is_cached_under_its_basename(cache, server, downloads):
    shutil.move(server / FILENAME, server / "my-net.pkl")
    url = (server / "my-net.pkl").as_uri()
    assert transfer.resolve_resume_weights(url) == str(cache / "my-net.pkl")
    downloads.forbid()
    assert transfer.resolve_resume_weights(url) == str(cache / "my-net.pkl")
    assert downloads.seen == [url]
    with pytest.raises(UserError, match="names no file"):
        transfer.resolve_resume_weights("https://example.com/")


def test_a_local_path_is_returned_as_given(tmp_path, reference_dir, downloads):
    pkl = str(reference_dir / "tf1_small.pkl")
    assert transfer.resolve_resume_weights(pkl) == pkl
    missing = str(tmp_path / "nets" / "ffhq.pkl")
    with pytest.raises(UserError) as e:
        transfer.resolve_resume_weights(missing)
    assert missing in one_line(e) and "no such" in str(e.value)
    assert downloads.seen == []


def test_an_unknown_name_lists_the_known_ones(cache, downloads):
    with pytest.raises(UserError) as e:
        transfer.resolve_resume_weights("ffhq128")
    msg = one_line(e)
    assert "ffhq128" in msg and all(n in msg for n in transfer.TRANSFER_SOURCES)
    assert downloads.seen == []


def test_run_description_names_the_source():
    from sg2ada.training.run_dir import run_desc

    assert run_desc("/d/dogs", cfg="paper256", resume="ffhq256") == "dogs-paper256-resumeffhq256"
    assert run_desc("/d/dogs", cfg="paper256", resume="https://x/y.pkl") == "dogs-paper256-resumecustom"


# ------------------------------------------------------------------------------------------------
# Through `sg2ada train`


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from sg2ada.data import convert_dataset

    dest = tmp_path_factory.mktemp("data") / "shapes"
    convert_dataset("builtin:shapes", dest, max_images=32, log=lambda msg: None)
    return str(dest)


def test_cli_dry_run_downloads_nothing(shapes, tmp_path, cache, server, downloads, capsys):
    downloads.forbid()
    assert cli(["train", "--outdir", str(tmp_path / "runs"), "--data", shapes, "--cfg", "tiny",
                "--resume", NAME, "-n"]) == 0
    out = capsys.readouterr().out
    assert "00000-shapes-tiny-resumeffhq256" in out
    assert "would download" in out and (server / FILENAME).as_uri() in out
    assert '"ada_kimg": 100' in out and '"ema_rampup": null' in out
    assert downloads.seen == [] and not cache.exists() and not (tmp_path / "runs").exists()


def test_cli_unknown_name_is_one_line(shapes, tmp_path, capsys):
    for extra in ([], ["-n"]):
        assert cli(["train", "--outdir", str(tmp_path / "runs"), "--data", shapes, "--cfg", "tiny",
                    "--resume", "ffhq", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--resume ffhq" in err[0] and "ffhq256, ffhq512" in err[0]
    assert not (tmp_path / "runs").exists()


def test_cli_offline_fails_before_making_a_run_dir(shapes, tmp_path, cache, server, monkeypatch, capsys):
    monkeypatch.setenv("SG2ADA_OFFLINE", "1")
    assert cli(["train", "--outdir", str(tmp_path / "runs"), "--data", shapes, "--cfg", "tiny",
                "--resume", NAME]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(cache / FILENAME) in err[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_cli_train_resume_name_downloads_once_and_copies_weights(shapes, tmp_path, cache, server, downloads,
                                                                 reference_dir, monkeypatch, capsys):
    """`sg2ada train --resume ffhq256` end to end: the name resolves to the served pickle, which is
    downloaded once and whose weights arrive in the trainer's networks."""
    from sg2ada import load_network
    from sg2ada.training import training_loop as tl

    # The reference net is 32x32 with 64/64/32/16 channels (channel_base 512, max 64), resnet D, skip G:
    # the tiny cfg with those channels matches all of D and G's convolutions (its w_dim of 64 differs
    # from the reference's 128, so the mapping and style affines keep their initial values).
    args = ["--data", shapes, "--cfg", "tiny", "--cbase", "512", "--cmax", "64", "--batch", "4", "--batch-gpu", "4",
            "--kimg", "0.004", "--tick", "0.004", "--snap", "1", "--aug", "noaug", "--metrics", "none"]
    copied = {}
    real_load = tl.load_transfer_weights

    def recording_load(trainer, path):
        real_load(trainer, path)
        copied["path"] = path
        copied["D"] = {k: np.array(v.numpy()) for k, v in trainer.D.named_variables().items()}
        copied["G_ema"] = {k: np.array(v.numpy()) for k, v in trainer.G_ema.named_variables().items()}

    monkeypatch.setattr(tl, "load_transfer_weights", recording_load)
    assert cli(["train", "--outdir", str(tmp_path / "runs"), *args, "--resume", NAME]) == 0
    out = capsys.readouterr().out
    (run,) = list((tmp_path / "runs").iterdir())
    assert run.name == "00000-shapes-tiny-kimg0.004-batch4-noaug-resumeffhq256"
    assert downloads.seen == [(server / FILENAME).as_uri()]
    assert copied["path"] == str(cache / FILENAME)
    assert "Copied" in out

    ref = load_network(str(reference_dir / "tf1_small.pkl"))
    ref_D = {k: np.array(v.numpy()) for k, v in ref.D.named_variables().items()}
    assert copied["D"].keys() == ref_D.keys()
    for k, v in ref_D.items():
        np.testing.assert_array_equal(copied["D"][k], v, err_msg=k)  # all of D arrived
    ref_G = {k: np.array(v.numpy()) for k, v in ref.G_ema.named_variables().items()}
    same = [k for k, v in copied["G_ema"].items() if k in ref_G and ref_G[k].shape == v.shape]
    assert len(same) > 10 and all(np.array_equal(copied["G_ema"][k], ref_G[k]) for k in same)

    # Next time the name is answered from the cache, without the network.
    downloads.forbid()
    assert transfer.resolve_resume_weights(NAME) == str(cache / FILENAME)
    assert cli(["train", "--outdir", str(tmp_path / "runs"), *args, "--resume", NAME, "-n"]) == 0
    assert f"{cache / FILENAME} (cached copy" in capsys.readouterr().out
    assert len(downloads.seen) == 1
