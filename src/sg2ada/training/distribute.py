"""tf.distribute set-up for training, and the stateless random streams of each replica.

NVIDIA trains with one process per GPU under torch DistributedDataParallel (stylegan2-ada-pytorch
`train.py: subprocess_fn`, `training_loop.py`): every rank draws its own latents and augmentations
from a rank-specific seed, and gradients are averaged. Here the same is done with a
`tf.distribute.MirroredStrategy` (one process, all local devices) or a
`MultiWorkerMirroredStrategy` (several processes, described by `TF_CONFIG`), and randomness is
made reproducible and replica-independent by deriving stateless seeds from
(seed, iteration, purpose, global sample index) rather than from per-process generator state.

Before TensorFlow joins a cluster (inside its C++, where no timeout or signal reaches Python),
`wait_for_cluster` checks that every task has started, over plain sockets on the chief's address.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import sys
import time

import tensorflow as tf

from sg2ada.errors import UserError


def tf_config_cluster() -> dict | None:
    """The cluster spec of `TF_CONFIG` when it names more than one task, else None."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UserError(f"TF_CONFIG is not valid JSON: {e}") from None
    cluster = cfg.get("cluster") if isinstance(cfg, dict) else None
    if not isinstance(cluster, dict) or not all(isinstance(v, list) for v in cluster.values()):
        raise UserError('TF_CONFIG must be {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
                        '"index": i}}; unset it to train in one process')
    n = sum(len(v) for v in cluster.values())
    return cfg if n > 1 else None


def _local_devices() -> list[str]:
    """The devices this process trains on: its GPUs, else its CPU split into SG2ADA_CPU_DEVICES
    logical devices (default 1), which lets a CPU-only machine run the multi-replica code path."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [d.name for d in gpus]
    n = int(os.environ.get("SG2ADA_CPU_DEVICES", "1") or 1)
    cpus = tf.config.list_logical_devices("CPU")
    if n > 1 and len(cpus) < n:
        try:
            tf.config.set_logical_device_configuration(
                tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * n)
            cpus = tf.config.list_logical_devices("CPU")
        except RuntimeError:  # TensorFlow's devices are fixed once initialised
            raise UserError("SG2ADA_CPU_DEVICES must be set before TensorFlow starts") from None
    return [d.name for d in cpus[:max(n, 1)]]


def make_strategy(name: str = "auto", cluster_timeout_sec: float = 600) -> tf.distribute.Strategy:
    """`auto`: MultiWorkerMirrored when TF_CONFIG names a cluster, else Mirrored over the local
    devices; `default`: no distribution (TensorFlow's default strategy). A cluster is joined once
    all its tasks have started (`wait_for_cluster`, at most `cluster_timeout_sec`)."""
    if name == "auto":
        name = "multiworker" if tf_config_cluster() else "mirrored"
    if name == "multiworker":
        cfg = tf_config_cluster()
        if cfg is None:
            raise UserError("--strategy multiworker needs TF_CONFIG describing a cluster of >1 tasks")
        wait_for_cluster(cfg, cluster_timeout_sec)
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        # Also for one device: MirroredStrategy keeps one code path for 1 and N replicas.
        return tf.distribute.MirroredStrategy(_local_devices())
    if name == "default":
        return tf.distribute.get_strategy()
    raise UserError(f"unknown --strategy {name!r}; choose auto, mirrored, multiworker or default")


def count_replicas(name: str = "auto") -> int:
    """The replica count `make_strategy(name)` would give, without joining a cluster (dry runs)."""
    cluster = tf_config_cluster() if name in ("auto", "multiworker") else None
    if name == "multiworker" and cluster is None:
        raise UserError("--strategy multiworker needs TF_CONFIG describing a cluster of >1 tasks")
    local = len(_local_devices())
    if cluster is not None:
        return local * _training_tasks(cluster["cluster"])
    return 1 if name == "default" else local


def num_workers(strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    return max(_training_tasks(resolver.cluster_spec().as_dict() if resolver is not None else {}), 1)


def _training_tasks(cluster: dict) -> int:
    """The processes of a cluster spec that train (chief and workers; not evaluators or ps)."""
    return sum(len(v) for k, v in cluster.items() if k in ("chief", "worker"))


def is_chief(strategy) -> bool:
    """True on the process that writes files: the `chief` task, else worker 0, else the only process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or num_workers(strategy) == 1:
        return True
    return (resolver.task_type, resolver.task_id) == _chief_task(resolver.cluster_spec().as_dict())


def _chief_task(cluster: dict) -> tuple[str, int]:
    """The (type, index) of a cluster's chief: the `chief` task, else worker 0."""
    return ("chief", 0) if "chief" in cluster else ("worker", 0)


def broadcast_from_chief(strategy, value: int) -> int:
    """The chief's `value` on every worker (a collective: every worker must call it)."""
    chief = is_chief(strategy)

    def fn():
        first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, 0)
        return tf.where(tf.logical_and(first, chief), tf.constant(value, tf.int64), tf.constant(0, tf.int64))

    return int(strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(fn), axis=None))


# ---- Cluster start-up ------------------------------------------------------------------------
# A line protocol over TCP on the chief's TF_CONFIG address. A task sends one JSON line
# {"task": [type, index], "cluster": {...}}; the chief answers `wait <who is missing>` (again every
# report), then `go` when every task is there, or `error <message>`.

CLUSTER_REPORT_SEC = 10  # how often a waiting task names the tasks it waits for
_CHIEF_CLOSE_SEC = 5  # how long the chief waits for the workers to close first after `go`


def wait_for_cluster(cfg: dict, timeout_sec: float, report_sec: float = CLUSTER_REPORT_SEC) -> None:
    """Return once every training task of TF_CONFIG's cluster (`cfg`) has started.

    The chief listens on its own address; every other task connects to it, retrying each second,
    and says who it is; when all are there the chief answers `go`. Meanwhile each task prints the
    tasks it waits for every `report_sec`, and after `timeout_sec` raises a UserError naming them.
    No socket call waits more than a second, so SIGTERM/SIGINT handlers run at once. The workers
    close their connections first, so TensorFlow can bind the chief's port right after.
    """
    cluster = {t: list(addrs) for t, addrs in cfg["cluster"].items() if t in ("chief", "worker")}
    tasks = {(t, i): addr for t, addrs in cluster.items() for i, addr in enumerate(addrs)}
    task = cfg.get("task") or {}
    me = (task.get("type"), task.get("index"))
    if me not in tasks:
        raise UserError(f"TF_CONFIG's task {json.dumps(task)} is not a chief or worker of its cluster "
                        f"{json.dumps(cluster)}; give each process its own type and index in it")
    chief = _chief_task(cluster)
    clock = _Clock(timeout_sec, report_sec)
    if me == chief:
        _gather(cluster, tasks, chief, clock)
    else:
        _join_chief(me, cluster, _task_name(chief, tasks[chief]), tasks[chief], clock)


class _Clock:
    """The deadline and report times of a wait for the cluster."""

    def __init__(self, timeout_sec: float, report_sec: float):
        self.start = time.monotonic()
        self.timeout_sec, self.report_sec = timeout_sec, report_sec
        self.next_report = self.start + min(1.0, report_sec)  # a cluster that forms at once prints nothing

    def expired(self) -> bool:
        return time.monotonic() - self.start >= self.timeout_sec

    def report_due(self) -> bool:
        if time.monotonic() < self.next_report:
            return False
        self.next_report += self.report_sec
        return True

    def wait_sec(self) -> float:
        """How long a socket call may block: at most 1 s, and not past the next report or the deadline."""
        now = time.monotonic()
        return max(min(1.0, self.next_report - now, self.start + self.timeout_sec - now), 0.01)

    def report(self, missing: str) -> None:
        elapsed = time.monotonic() - self.start
        print(f"Waiting for the cluster ({elapsed:.0f} s of {self.timeout_sec / 60:g} min): missing {missing}",
              flush=True)

    def timed_out(self, missing: str, fix: str) -> UserError:
        return UserError(f"the cluster did not form within --cluster-timeout {self.timeout_sec / 60:g} min: "
                         f"missing {missing}; {fix}")


def _task_name(task: tuple[str, int], addr: str) -> str:
    return f"{task[0]} {task[1]} ({addr})"


def _host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise UserError(f"TF_CONFIG address {addr!r} must be host:port") from None


def _gather(cluster: dict, tasks: dict, chief: tuple[str, int], clock: _Clock) -> None:
    """The chief's side: accept every other task, then send `go` to all."""
    others = {k: addr for k, addr in tasks.items() if k != chief}
    port = _host_port(tasks[chief])[1]
    dual = socket.has_dualstack_ipv6()
    try:  # every interface, as TensorFlow's server; SO_REUSEADDR is set, so TensorFlow can bind it next
        server = socket.create_server(("", port), family=socket.AF_INET6 if dual else socket.AF_INET,
                                      dualstack_ipv6=dual)
    except OSError as e:
        raise UserError(f"cannot listen on {tasks[chief]}, the chief's address in TF_CONFIG: {e.strerror}; "
                        f"stop the process that holds port {port}, or give the chief another port") from None
    joined: dict[tuple, socket.socket] = {}
    pending: dict[socket.socket, bytes] = {}  # connected, not yet said who they are
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ)

    def drop(conn):
        sel.unregister(conn)
        conn.close()
        pending.pop(conn, None)
        for k in [k for k, c in joined.items() if c is conn]:
            del joined[k]

    def missing():
        names = [_task_name(k, addr) for k, addr in others.items() if k not in joined]
        return f"{len(names)} of {len(tasks)} tasks: {', '.join(names)}"

    try:
        while len(joined) < len(others):
            if clock.expired():
                them = "them" if len(others) - len(joined) > 1 else "it"
                error = clock.timed_out(missing(), f"start {them} with the same TF_CONFIG cluster, or check "
                                                   "TF_CONFIG's addresses and the firewall")
                _send(joined.values(), f"error {error}")
                raise error
            if clock.report_due():
                clock.report(missing())
                _send(joined.values(), f"wait {missing()}")
            for key, _ in sel.select(clock.wait_sec()):
                if key.fileobj is server:
                    try:
                        conn = server.accept()[0]
                    except OSError:  # it gave up before being accepted
                        continue
                    conn.setblocking(False)
                    pending[conn] = b""
                    sel.register(conn, selectors.EVENT_READ)
                    continue
                conn = key.fileobj
                data = _recv(conn)
                if data is None:
                    continue
                if not data or conn not in pending:  # it left (a joined task sends nothing more)
                    drop(conn)
                    continue
                pending[conn] += data
                if b"\n" not in pending[conn]:
                    continue
                who, refusal = _admit(pending.pop(conn).split(b"\n")[0], cluster, others, joined)
                if refusal:
                    print(f"warning: turned away a task: {refusal}", file=sys.stderr, flush=True)
                    _send([conn], f"error {refusal}")
                    drop(conn)
                else:
                    joined[who] = conn
                    _send([conn], f"wait {missing()}")
        _send(joined.values(), "go")
        # The workers close first: the TIME_WAIT of these connections stays on their side.
        deadline = time.monotonic() + _CHIEF_CLOSE_SEC
        while joined and time.monotonic() < deadline:
            for key, _ in sel.select(min(1.0, max(deadline - time.monotonic(), 0.01))):
                if key.fileobj is not server and _recv(key.fileobj) == b"":
                    drop(key.fileobj)
    finally:
        for conn in list(pending) + list(joined.values()):
            conn.close()
        sel.close()
        server.close()


def _admit(line: bytes, cluster: dict, others: dict, joined: dict) -> tuple[tuple | None, str | None]:
    """(task, None) for a valid greeting, else (None, why it is turned away)."""
    try:
        hello = json.loads(line)
        who, their_cluster = (hello["task"][0], hello["task"][1]), hello["cluster"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None, "a connection to the chief's port did not come from an sg2ada cluster task"
    if their_cluster != cluster:
        return None, (f"{who[0]} {who[1]}'s TF_CONFIG cluster {json.dumps(their_cluster)} differs from the chief's "
                      f"{json.dumps(cluster)}; give every task the same cluster")
    if who not in others:
        return None, f"{who[0]} {who[1]} is not a task of the cluster {json.dumps(cluster)}"
    if who in joined:
        return None, f"another process already joined as {who[0]} {who[1]}; give each task its own index"
    return who, None


def _join_chief(me: tuple[str, int], cluster: dict, chief_name: str, chief_addr: str, clock: _Clock) -> None:
    """A worker's side: connect to the chief (retrying each second) and wait for its `go`."""
    hello = (json.dumps({"task": list(me), "cluster": cluster}) + "\n").encode()
    host, port = _host_port(chief_addr)
    state = {"missing": f"the chief, {chief_name}", "odd": False}
    while True:
        if clock.expired():
            odd = (" (its port answers, but not as an sg2ada cluster start: is an earlier cluster still running? "
                   "stop every task and start them again)") if state["odd"] else ""
            raise clock.timed_out(state["missing"] + odd, "start every task with the same TF_CONFIG cluster, "
                                                          "or check TF_CONFIG's addresses and the firewall")
        if clock.report_due():
            clock.report(state["missing"])
        try:
            conn = socket.create_connection((host, port), timeout=clock.wait_sec())
        except OSError:  # the chief is not listening yet
            time.sleep(clock.wait_sec())
            continue
        with conn:
            try:
                conn.sendall(hello)
                if _follow_chief(conn, clock, state):
                    return  # closing first: TIME_WAIT stays on this side, not on the chief's port
            except OSError:  # the chief went away: connect again
                pass
        state["missing"] = f"the chief, {chief_name}"


def _follow_chief(conn: socket.socket, clock: _Clock, state: dict) -> bool:
    """Read the chief's answers until `go` (True) or until it closes (False)."""
    buffer = b""
    while True:
        if clock.expired():
            return False
        if clock.report_due():
            clock.report(state["missing"])
        conn.settimeout(clock.wait_sec())
        try:
            data = conn.recv(4096)
        except socket.timeout:
            continue
        if not data:
            state["odd"] = state["odd"] or bool(buffer)  # bytes that are no line of ours
            return False
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            word, _, rest = line.decode(errors="replace").partition(" ")
            if word == "go":
                return True
            if word == "wait":
                state["missing"] = rest
            elif word == "error":
                raise UserError(rest)
            else:
                state["odd"] = True
                return False


def _send(conns, line: str) -> None:
    for conn in list(conns):
        try:
            conn.setblocking(True)
            conn.settimeout(1.0)
            conn.sendall(line.encode() + b"\n")
        except OSError:  # gone: seen as EOF by the next read
            pass
        finally:
            conn.setblocking(False)


def _recv(conn: socket.socket) -> bytes | None:
    """Bytes from a non-blocking socket that select() found readable: b"" when it closed, None when
    nothing came after all."""
    try:
        return conn.recv(4096)
    except BlockingIOError:
        return None
    except OSError:
        return b""


# Purposes of random draws; values are part of the seed derivation, so never renumber them.
PURPOSE_Z = 1
PURPOSE_MIX_Z = 2
PURPOSE_MIX_CUTOFF = 3
PURPOSE_GEN_C = 4
PURPOSE_PL_NOISE = 5
PURPOSE_SYNTH_NOISE = 6
PURPOSE_AUGMENT = 7


def base_seed(seed, iteration) -> tf.Tensor:
    """int32 [2] stateless seed for one training iteration (iterations stay far below 2**31)."""
    root = tf.stack([tf.constant(0x5EED, tf.int32), tf.cast(seed, tf.int32)])
    return tf.random.experimental.stateless_fold_in(root, tf.cast(iteration, tf.int32))


def derive(seed: tf.Tensor, *data) -> tf.Tensor:
    """Fold integers (Python or scalar tensors) into a stateless seed."""
    for d in data:
        seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(d, tf.int32))
    return seed
