"""`bench --cluster` on a real Ray cluster on 127.0.0.1: a head (no CPUs, as a head kept for
the cluster's own work is started) and worker nodes labelled `localagent-host=a|b|c`, each a
separate `ray start --block` process with a store of its own; the bench driven through the
real CLI in a subprocess, the bundled SmolLM2-135M loaded on the nodes, real kills.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_server import llama_server  # noqa: F401 (fixture)
from test_cli_bench import _wait_for_lines

from localagent.bench.database import ResultsDB
from localagent.bench.rundir import RunDir

pytest.importorskip("ray", reason="the 'cluster' extra is not installed")

RAY = str(Path(sys.executable).with_name("ray"))
# two quick tasks of the shipped suite; few steps and tokens keep the model's trials short
TASKS = ["--task", "write-hello", "--task", "read-version"]
SHORT = ["--max-steps", "2", "--max-tokens", "48"]
# a dead node is noticed within seconds instead of Ray's default half minute (lenient enough
# that a node slowed down by a busy 2-core machine is not taken for dead)
HEALTH = json.dumps(
    {"health_check_period_ms": 1000, "health_check_timeout_ms": 3000, "health_check_failure_threshold": 5}
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Head and worker nodes as process groups of their own, killed at the end."""

    def __init__(self, root: Path):
        self.root = root
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - kept open for the process's life
        self.procs[name] = subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **env},
            start_new_session=True,
        )

    def start_head(self) -> None:
        self._start(
            "head",
            [
                "--head",
                f"--port={self.port}",
                "--num-cpus=0",
                "--include-dashboard=false",
                "--object-store-memory=100000000",
                f"--temp-dir={self.root / 'ray'}",
                f"--system-config={HEALTH}",
            ],
            {},
        )
        self.wait_for_nodes(1)

    def add_node(self, name: str, **env: str) -> None:
        """Starts a worker node and waits until the cluster lists it. Ray gives a raylet 30 s to
        register, which a loaded 2-core machine can miss: then it is started once more."""
        store = self.root / f"home-{name}"  # each node's own LOCALAGENT_HOME, as on another machine
        args = [
            f"--address={self.address}",
            "--num-cpus=1",
            "--object-store-memory=100000000",
            f"--labels=localagent-host={name}",
        ]
        for attempt in range(2):
            self._start(name, args, {"LOCALAGENT_HOME": str(store), **env})
            try:
                self.wait_for_node(name)
                return
            except AssertionError:
                if attempt:
                    raise
                self.kill(name)

    def wait_for_node(self, name: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if name in self.alive():
                return
            proc = self.procs[name]
            assert proc.poll() is None, f"ray node {name} exited: {(self.root / f'{name}.log').read_text()[-2000:]}"
            time.sleep(0.5)
        raise AssertionError(f"node {name} never joined the cluster")

    def alive(self) -> list[str]:
        """The localagent-host labels of the alive nodes ('head' for the unlabelled head)."""
        code = (
            "import ray, logging, json; ray.init(address=%r, logging_level=logging.ERROR); "
            "print(json.dumps([n['Labels'].get('localagent-host', 'head') for n in ray.nodes() if n['Alive']]))"
        ) % self.address
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        # Ray may print its own warnings to stdout after ours ("raylet has lagging heartbeats"
        # on a loaded machine): the answer is the line that is a JSON list
        lists = [line for line in out.stdout.splitlines() if line.startswith("[")] if out.returncode == 0 else []
        return json.loads(lists[-1]) if lists else []

    def wait_for_nodes(self, n: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.alive()) >= n:
                return
            for name, proc in self.procs.items():
                assert proc.poll() is None, f"ray node {name} exited: {(self.root / f'{name}.log').read_text()[-2000:]}"
            time.sleep(0.5)
        raise AssertionError(f"the cluster never reached {n} nodes")

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):  # it may have exited already
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for name in [n for n in self.procs if n != "head"] + ["head"]:
            if name in self.procs:
                self.kill(name)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # a short root: Ray's unix sockets live under it, and their paths may not pass 107 bytes
    root = Path(tempfile.mkdtemp(prefix="lacl-", dir="/tmp"))
    c = Cluster(root)
    try:
        c.start_head()
        c.add_node("a")
        c.add_node("b")
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


def bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "localagent", "bench", *args], capture_output=True, text=True, timeout=timeout
    )


def _keys(trials) -> Counter:
    return Counter((t.model, t.task_id, t.trial) for t in trials)


def test_every_trial_once_and_pinned_models_on_their_nodes(cluster, tmp_path, localagent_home):
    out = tmp_path / "run"
    proc = bench(
        "--cluster",
        cluster.address,
        "--model",
        "oracle",
        "--model",
        "smollm2-135m",
        "--pin",
        "smollm2-135m=b",
        *TASKS,
        *SHORT,
        "--trials",
        "2",
        "--out",
        str(out),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    doc = json.loads(proc.stdout)
    trials = RunDir(out).read_trials()
    keys = _keys(trials)
    assert len(keys) == 8 and set(keys.values()) == {1}  # 2 models x 2 tasks x 2 trials, each once
    with ResultsDB() as db:
        assert _keys(db.trials(doc["run"]["run_id"])) == keys
    local = [t for t in trials if t.model == "smollm2-135m"]
    assert {t.node for t in local} == {"b"}  # pinned
    assert {t.engine["n_threads"] for t in local} == {1}  # the CPUs node b gave Ray, not the machine's cores
    assert all(t.node in {"a", "b"} for t in trials)  # tasks stay off the CPU-less head
    oracle = [t for t in trials if t.model == "oracle"]
    assert all(t.success for t in oracle)
    for t in trials:  # the driver wrote every trace from what the nodes sent back
        assert t.trace_path and (out / t.trace_path).is_file()
        header = json.loads((out / t.trace_path).read_text().splitlines()[0])
        assert header["task_id"] == t.task_id and header["trial"] == t.trial
        assert t.host is not None and t.host.logical_cores > 0
    assert any("trials per node: " in n for n in doc["notices"])


def test_a_hosted_baseline_runs_as_tasks_on_the_nodes_priced_with_its_key(
    cluster, llama_server, tmp_path, localagent_home, monkeypatch
):
    """A loopback llama_cpp.server stands in for a hosted API. Its catalog entry lives in the
    driver's user catalog only, and its key only in the driver's environment: the nodes get
    the entry with the task and the one key variable it names."""
    from localagent import settings

    settings.user_catalog().parent.mkdir(parents=True, exist_ok=True)
    settings.user_catalog().write_text(
        f'[hosted.loopback]\nprovider = "test"\nmodel = "smollm2"\nbase_url = "{llama_server}/v1"\n'
        'api_key_env = "LOCALAGENT_TEST_KEY"\n'
        'price = { input = 2.0, cached_input = 0.5, output = 8.0, source = "test", as_of = "2026-11" }\n'
    )
    monkeypatch.setenv("LOCALAGENT_TEST_KEY", "sk-test")
    out = tmp_path / "run"
    proc = bench(
        "--cluster",
        cluster.address,
        "--model",
        "noop",
        "--baseline",
        "loopback",
        *TASKS,
        *SHORT,
        "--jobs",
        "2",
        "--out",
        str(out),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    trials = RunDir(out).read_trials()
    hosted = [t for t in trials if t.model == "loopback"]
    assert len(hosted) == 2 and len(_keys(trials)) == 4
    for t in hosted:
        assert t.model_kind == "hosted" and t.node in {"a", "b"}
        assert t.error is None or "LOCALAGENT_TEST_KEY" not in t.error
        assert t.input_tokens > 0 and t.cost_usd > 0


def test_unknown_host_and_pin_without_cluster_are_refused(cluster, localagent_home):
    proc = bench("--cluster", cluster.address, "--model", "oracle", "--hosts", "nowhere", *TASKS)
    assert proc.returncode == 1
    assert "no node of the cluster is named 'nowhere'" in proc.stderr and "nodes: a, b" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = bench("--model", "smollm2-135m", "--pin", "smollm2-135m=a", *TASKS)
    assert proc.returncode == 1 and "--cluster ADDRESS" in proc.stderr
    proc = bench("--cluster", "127.0.0.1:1", "--model", "oracle", *TASKS, timeout=180)
    assert proc.returncode == 1 and "cannot join the Ray cluster at 127.0.0.1:1" in proc.stderr


def test_an_offline_node_that_lacks_the_model_refuses_by_name(cluster, tmp_path, localagent_home):
    """Node c is offline and its store is empty: asked to run a catalog model that would have
    to be pulled, it refuses, named, and the trials stay pending for a --resume."""
    cluster.add_node("c", LOCALAGENT_OFFLINE="1")
    try:
        proc = bench(
            "--cluster",
            cluster.address,
            "--model",
            "qwen3.5-0.8b",
            "--hosts",
            "c",
            *TASKS,
            *SHORT,
            "--out",
            str(tmp_path / "r"),
            "--json",
        )
        notices = json.loads(proc.stdout)["notices"] if proc.returncode == 0 else []
        assert proc.returncode == 0, proc.stderr + proc.stdout
        assert any(n.startswith("node c cannot run qwen3.5-0.8b:") and "offline" in n for n in notices), notices
        assert any("2 trial(s) of qwen3.5-0.8b not run: no node of the cluster could run it" in n for n in notices)
        assert RunDir(tmp_path / "r").read_trials() == []  # nothing recorded: --resume can run them later
    finally:
        cluster.kill("c")


def test_a_node_killed_mid_run_loses_no_trial(cluster, tmp_path, localagent_home):
    cluster.add_node("d")
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "localagent",
            "bench",
            "--cluster",
            cluster.address,
            "--model",
            "smollm2-135m",
            "--hosts",
            "b,d",
            *TASKS,
            *SHORT,
            "--trials",
            "3",
            "--out",
            str(out),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_lines(out / "results.jsonl", 1, proc, timeout=300)
    cluster.kill("d")  # the whole node: raylet, its workers, the model loaded there
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr + stdout
    trials = RunDir(out).read_trials()
    keys = _keys(trials)
    assert len(keys) == 6 and set(keys.values()) == {1}
    assert all(t.stop_reason != "runtime_error" for t in trials)
    doc = json.loads(stdout)
    assert any("node d left the cluster" in n or "worker on node d died" in n for n in doc["notices"]) or all(
        t.node == "b" for t in trials
    )


def test_resume_after_the_driver_is_killed(cluster, tmp_path, localagent_home):
    out = tmp_path / "run"
    args = ["--cluster", cluster.address, "--model", "smollm2-135m", *TASKS, *SHORT, "--trials", "3"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "localagent", "bench", *args, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_lines(out / "results.jsonl", 1, proc, timeout=300)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    before = RunDir(out).read_trials()
    assert 1 <= len(before) < 6
    resumed = bench("--resume", str(out), "--cluster", cluster.address, "--json")
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    after = RunDir(out).read_trials()
    keys = _keys(after)
    assert len(keys) == 6 and set(keys.values()) == {1}
    assert after[: len(before)] == before  # kept, not run again
    with ResultsDB() as db:
        assert _keys(db.trials(before[0].run_id)) == keys
