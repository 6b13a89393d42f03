"""A real two-node Ray cluster on this machine (issue 14): ``ray start --head`` and a second
``ray start --address=...`` with resources of its own, driven through ``RAY_ADDRESS`` by
``lth robust --executor ray``. Trials spread over both nodes; killing the second node
mid-run resumes its trial on the head from its checkpoints, with results identical to a
run on one machine; a node that cannot see the store fails the run at once, with one
message. Slow (a cluster starts in seconds, trials run for many): ``make test-slow``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .test_workers import LONG, descendants, markers

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
CONFIG = str(ROOT / "configs" / "quickstart.toml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Ray nodes started by this test (each its own process group), stopped at the end."""

    def __init__(self, tmp_path: Path, head_cpus: int):
        self.tmp, self.port = tmp_path, free_port()
        # A test cluster on localhost: no token to hand around.
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled",
                    "RAY_ADDRESS": f"127.0.0.1:{self.port}", "PYTHONUNBUFFERED": "1"}
        self.nodes: list[subprocess.Popen] = []
        head_log = self._start(["--head", f"--port={self.port}", f"--num-cpus={head_cpus}",
                                "--include-dashboard=false"], "head")
        deadline = time.time() + 90
        while "Ray runtime started" not in head_log.read_text():
            if time.time() > deadline or self.nodes[0].poll() is not None:
                pytest.skip(f"ray start --head failed: {head_log.read_text()[-2000:]}")
            time.sleep(0.2)

    def _start(self, args: list[str], name: str, wrap: list[str] = ()) -> Path:
        log = self.tmp / f"ray-{name}.log"
        cmd = [*wrap, RAY, "start", *args, "--disable-usage-stats", "--block"]
        self.nodes.append(subprocess.Popen(cmd, env=self.env, stdout=log.open("w"),
                                           stderr=subprocess.STDOUT, start_new_session=True))
        return log

    def add_node(self, name: str, cpus: int = 1, hide: Path | None = None) -> subprocess.Popen:
        """A worker node; ``hide``: a path this node sees as an empty folder (a private
        mount namespace with a tmpfs over it), as a node without the shared store would."""
        args = [f"--address=127.0.0.1:{self.port}", f"--num-cpus={cpus}",
                f"--resources={json.dumps({name: 1})}"]
        wrap: list[str] = []
        if hide is not None:
            wrap = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                    f'mount -t tmpfs tmpfs "{hide}" && exec "$0" "$@"']
        self._start(args, name, wrap)
        self.wait_for_nodes(len(self.nodes))
        return self.nodes[-1]

    def wait_for_nodes(self, n: int) -> None:
        probe = ("import ray; ray.init(log_to_driver=False); "
                 "print(sum(node['Alive'] for node in ray.nodes()))")
        deadline = time.time() + 120
        while time.time() < deadline:
            out = subprocess.run([sys.executable, "-c", probe], env=self.env,
                                 capture_output=True, text=True, timeout=120).stdout
            if out.strip().splitlines()[-1:] == [str(n)]:
                return
            time.sleep(1)
        pytest.fail(f"the cluster did not reach {n} nodes")

    def kill(self, node: subprocess.Popen) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(node.pid, sig)
            except ProcessLookupError:
                return
            try:
                node.wait(timeout=10)
            except subprocess.TimeoutExpired:
                continue

    def close(self) -> None:
        for node in reversed(self.nodes):
            self.kill(node)


@pytest.fixture
def cluster(tmp_path):
    made: list[Cluster] = []

    def make(head_cpus: int = 1) -> Cluster:
        made.append(Cluster(tmp_path, head_cpus))
        return made[-1]

    yield make
    for c in made:
        c.close()


def robust(store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lth", "robust", CONFIG, "--seeds", "0-1", "--store",
            str(store), "--quiet", *LONG, *extra]


def run_files(store: Path) -> dict[str, bytes]:
    """Every finished level's weights, by trial run and file."""
    return {str(p.relative_to(store).parts[-3:]): p.read_bytes()
            for p in sorted(store.glob("*/trials/*/level_*/final.safetensors"))}


def test_trials_spread_over_two_nodes_and_survive_losing_one(cluster, tmp_path):
    ray = cluster()
    second = ray.add_node("second")
    store = tmp_path / "store"
    proc = subprocess.Popen(robust(store, "--executor", "ray", "--workers", "2"),
                            env=ray.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.time() + 180
        while len(markers(store)) < 2:
            assert time.time() < deadline and proc.poll() is None, "trials did not start"
            time.sleep(0.1)
        on_second = descendants(second.pid)
        where = {key: pid in on_second for key, pid in markers(store).items()}
        assert sorted(where.values()) == [False, True], where  # one trial on each node
        time.sleep(6)  # the second node's trial writes checkpoints, then the node dies
        ray.kill(second)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    (status_file,) = store.glob("*/trials.json")
    status = json.loads(status_file.read_text())["trials"]
    assert all(s["status"] == "done" for s in status.values()), status
    here = tmp_path / "one_machine"
    subprocess.run(robust(here, "--executor", "sequential"), check=True, capture_output=True,
                   env=ray.env)
    assert run_files(store) == run_files(here)  # the resumed trial too, bit for bit
    # Without RAY_ADDRESS, --executor ray starts a Ray of its own, even beside a running
    # cluster that `ray start` left as this machine's current one.
    alone = {k: v for k, v in ray.env.items() if k != "RAY_ADDRESS"}
    local = subprocess.run(robust(tmp_path / "local", "--executor", "ray", "--workers", "2",
                                  "--set", "train.duration='20it'"),
                           env=alone, capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stderr


def test_a_node_that_cannot_see_the_store_fails_the_run_at_once(cluster, tmp_path):
    if subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                      capture_output=True).returncode != 0:
        pytest.skip("needs a private mount namespace (unshare -m: root)")
    store = tmp_path / "store"
    store.mkdir()
    ray = cluster(head_cpus=0)  # every trial runs on the blind node
    ray.add_node("blind", hide=store)
    start = time.time()
    done = subprocess.run(robust(store, "--executor", "ray", "--workers", "1"), env=ray.env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "cannot see the store" in done.stderr and "every node mounts" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.time() - start < 120
    assert not list(store.glob("*/trials/*/level_000/final.safetensors"))
