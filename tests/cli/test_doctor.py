"""`sg2ada doctor` diagnoses, with the machine faked at the Probe boundary (no skipping)."""

from __future__ import annotations

import argparse
import json

import pytest

from sg2ada.cli import doctor
from sg2ada.cli.doctor import GpuInfo, Probe

CUDA_BUILD = {"is_cuda_build": True, "cuda_version": "12.5.1", "cudnn_version": "9"}


class FakeProbe(Probe):
    def __init__(self, build=CUDA_BUILD, gpus=(), nodes=("/dev/nvidia0",), driver="NVRM version: 550.54",
                 cudnn="9.3.0", cudart="12.5", xla_ok=True):
        self._build, self._gpus, self._nodes, self._driver = build, list(gpus), list(nodes), driver
        self._libs = {"cudnn": cudnn, "cudart": cudart}
        self._xla_ok = xla_ok

    def tf_version(self):
        return "2.21.0"

    def build_info(self):
        return dict(self._build)

    def gpus(self):
        return self._gpus

    def device_nodes(self):
        return self._nodes

    def driver_version(self):
        return self._driver

    def loaded_library_version(self, lib):
        return self._libs[lib]

    def xla_step(self):
        if not self._xla_ok:
            raise RuntimeError("XLA compilation failed: fake")
        return "loss 0.69"


def run(probe, capsys, as_json=False):
    rc = doctor.main(argparse.Namespace(json=as_json), probe=probe)
    return rc, capsys.readouterr().out


def test_gpu_present_reports_devices_and_mixed_precision(capsys):
    rc, out = run(FakeProbe(gpus=[GpuInfo("NVIDIA A100", (8, 0))]), capsys)
    assert rc == 0
    assert "NVIDIA A100 (compute 8.0)" in out
    assert "bfloat16: yes" in out
    assert "diagnosis" not in out


def test_old_gpu_advises_fp32(capsys):
    rc, out = run(FakeProbe(gpus=[GpuInfo("Tesla P100", (6, 0))]), capsys)
    assert rc == 1
    assert "--fp32" in out


def test_cpu_only_build_says_which_package(capsys):
    rc, out = run(FakeProbe(build={"is_cuda_build": False}), capsys)
    assert rc == 0  # a CPU machine is a valid place to run; nothing failed
    assert "CPU-only build" in out and "sg2ada[gpu]" in out


def test_no_device_nodes_means_container_without_gpus(capsys):
    rc, out = run(FakeProbe(nodes=()), capsys)
    assert rc == 1
    assert "--gpus all" in out


def test_device_nodes_without_driver(capsys):
    rc, out = run(FakeProbe(driver=None), capsys)
    assert "no driver is loaded" in out


def test_cudnn_8_with_tf_needing_9_is_named(capsys):
    rc, out = run(FakeProbe(cudnn="8.9.7"), capsys)
    assert rc == 1
    assert "needs cuDNN 9 but the loader finds 8.9.7" in out


def test_missing_cuda_runtime(capsys):
    rc, out = run(FakeProbe(cudart=None), capsys)
    assert "needs CUDA 12.5.1" in out


def test_everything_present_but_invisible(capsys):
    rc, out = run(FakeProbe(), capsys)
    assert "CUDA_VISIBLE_DEVICES" in out


def test_xla_failure_is_reported_not_raised(capsys):
    rc, out = run(FakeProbe(gpus=[GpuInfo("A100", (8, 0))], xla_ok=False), capsys)
    assert rc == 1
    assert "XLA compilation failed: fake" in out and "--no-xla" in out


def test_json_output(capsys):
    rc, out = run(FakeProbe(gpus=[GpuInfo("A100", (8, 0))]), capsys, as_json=True)
    report = json.loads(out)
    assert {c["name"] for c in report["checks"]} >= {"TensorFlow", "GPUs", "XLA training step", "mixed precision"}


@pytest.mark.slow
def test_real_probe_on_this_machine(capsys):
    """The real probe on this CPU machine: TF answers, and the XLA training step compiles and runs."""
    probe = Probe()
    checks, _ = doctor.diagnose(probe)
    by_name = {c.name: c for c in checks}
    assert by_name["TensorFlow"].detail.startswith("2.21")
    assert by_name["XLA training step"].ok, by_name["XLA training step"].detail
