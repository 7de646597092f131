"""`train_cv.py --ray ADDRESS` on a Ray test cluster of two simulated nodes on this machine.

The cluster (ray.cluster_utils.Cluster: a head and one more node, 1 CPU each, on 127.0.0.1) is
started once for the module. Every fold is a real child process on tiny data (32x48, one epoch).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tiny_layout

from carvana_seg.data.folds import make_folds, write_folds
from carvana_seg.data.layout import CarvanaLayout
from carvana_seg.locks import exclusive_lock
from carvana_seg.store.oof import OOF

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}  # Ray on 127.0.0.1 only, no usage report
ENV = {**os.environ, **LOOPBACK, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
TINY = (REPO / "configs" / "tiny.yaml").read_text()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = write_tiny_layout(tmp_path_factory.mktemp("cluster") / "data", cars=4, angles=4, hw=(48, 72))
    write_folds(make_folds(CarvanaLayout(root), 2, seed=0), root / "folds.csv")
    return root


@pytest.fixture(scope="module")
def ray_cluster():
    """The address of a two-node Ray cluster on this machine, shut down after the module."""
    before = {key: os.environ.get(key) for key in LOOPBACK}
    os.environ.update(LOOPBACK)  # read when ray is imported
    from ray.cluster_utils import Cluster

    small = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 80 * 1024**2}
    cluster = Cluster(initialize_head=True, head_node_args={**small, "include_dashboard": False})
    try:
        cluster.add_node(**small)
        yield cluster
    finally:
        cluster.shutdown()
        for key, value in before.items():
            os.environ.pop(key) if value is None else os.environ.update({key: value})


def experiments(folder: Path) -> list[str]:
    """Two experiment configs (their file names are their names): the tiny preset, plain and SE."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plain.yaml").write_text(TINY)
    (folder / "se.yaml").write_text(TINY.replace("block: plain", "block: se"))
    return [str(folder / "plain.yaml"), str(folder / "se.yaml")]


def settings(work: Path, data_root: Path) -> list[str]:
    return [f"data.root={data_root}", "data.size=32x48", "train.epochs=1", "train.batch_size=3",
            f"data.cache_dir={work / 'cache'}", f"exp.runs_dir={work / 'runs'}", f"exp.oof_dir={work / 'oof'}"]


def train_cv(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/train_cv.py", *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_two_nodes_match_the_sequential_loop_name_a_failed_fold_and_resume_it(tmp_path, data_root, ray_cluster):
    """2 experiments x 2 folds as Ray tasks over two nodes: a fold that fails is named with its
    log (exit 1), the rerun trains only it, and every fold's OOF equals the sequential loop's."""
    configs = experiments(tmp_path / "configs")
    sequential = train_cv("--config", *configs, *settings(tmp_path / "seq", data_root))
    assert sequential.returncode == 0, sequential.stderr[-3000:]

    work = tmp_path / "ray"
    blocker = work / "runs" / "se" / "fold1" / "state"  # a file where fold 1's state folder goes: it fails after epoch 1
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    command = ["--ray", ray_cluster.address, "--config", *configs, *settings(work, data_root)]
    failed = train_cv(*command)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    log = work / "runs" / "se" / "fold1" / "train.log"
    assert f"1 of 4 fold(s) failed: se fold 1 (exit 1, log {log}" in failed.stderr and "Traceback" not in failed.stderr
    assert "on the Ray cluster at" in failed.stdout and "plain fold 0: epoch 1/1" in failed.stdout
    assert len(set(re.findall(r" node ([0-9a-f]{8})", failed.stdout))) == 2, failed.stdout  # the folds ran on both nodes
    assert "NotADirectoryError" in log.read_text()

    blocker.unlink()
    rerun = train_cv(*command)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "training 1 fold(s) on the Ray cluster" in rerun.stdout
    assert sum("finished earlier" in line for line in rerun.stdout.splitlines()) == 3
    assert log.read_text().count("==== ") == 2  # the failed session and the resumed one, each in the same log

    for exp in ("plain", "se"):
        for fold in (0, 1):
            seq, dist = (OOF.load(tmp_path / run / "oof" / exp / f"fold{fold}.npz") for run in ("seq", "ray"))
            assert seq.ids.tolist() == dist.ids.tolist()
            np.testing.assert_array_equal(seq.probs, dist.probs)  # byte-equal uint8 levels


def test_a_fold_held_elsewhere_is_refused_before_anything_starts(tmp_path, data_root):
    """The per-fold lock holds across the Ray path: a fold another process is training is refused,
    naming the holder, before any runtime starts or any name is claimed."""
    configs = experiments(tmp_path / "configs")
    lock = tmp_path / "runs" / "se" / "fold0" / ".lock"
    lock.parent.mkdir(parents=True)
    with exclusive_lock(lock, "fold0 of experiment 'se'"):
        done = train_cv("--ray", "--config", *configs, *settings(tmp_path, data_root))
    assert done.returncode == 1 and "is being trained by" in done.stderr and str(lock) in done.stderr, done.stderr
    assert "Ray" not in done.stdout and not (tmp_path / "runs" / "plain").exists()


# a node joining the cluster at argv[1] on 127.0.0.1 (as Cluster.add_node starts one; `ray start` would
# use the machine's outside address), kept until SIGTERM
JOIN_NODE = """
import signal, sys, time
from ray._private.node import Node
from ray._private.parameter import RayParams
params = RayParams(gcs_address=sys.argv[1], num_cpus=1, num_gpus=0, node_ip_address="127.0.0.1", object_store_memory=80 * 1024**2,
                   include_log_monitor=False, node_manager_port=0, min_worker_port=0, max_worker_port=0)
params.dashboard_agent_listen_port = None
node = Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(1)
"""


def can_unshare() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not can_unshare(), reason="needs `unshare -m` (root) to give one node its own view of a folder")
def test_a_folder_one_node_cannot_see_is_refused_in_one_line(tmp_path, data_root, ray_cluster):
    """A third node whose results folder is another file system (an empty tmpfs over it, in its
    own mount namespace) fails the shared-storage check: one line naming the folder, nothing claimed."""
    work = tmp_path / "work"
    (work / "runs").mkdir(parents=True)
    script = f"mount -t tmpfs none {work / 'runs'} && exec {sys.executable} -c '{JOIN_NODE}' {ray_cluster.address}"
    node = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while sum(n["Alive"] for n in ray_cluster.global_state.node_table()) < 3:
            assert time.monotonic() < deadline and node.poll() is None, "the third node did not join"
            time.sleep(1)
        done = train_cv("--ray", ray_cluster.address, "--config", experiments(tmp_path / "configs")[0], *settings(work, data_root))
    finally:
        node.terminate()
        node.wait(timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert lines == [line for line in done.stderr.splitlines() if "shared storage" in line] and len(lines) == 1, done.stderr
    assert f"shared storage: {(work / 'runs').resolve()} is not visible from Ray node" in lines[0]
    assert not (work / "runs" / "plain").exists() and not list(work.rglob("shared-storage-check-*"))


def test_parallel_slots_share_the_gpus_out():
    """`--parallel N` on G GPUs: each fold a 1/ceil(N/G) share, so the N slots spread over every GPU."""
    from carvana_seg.training.cluster import local_resources

    assert local_resources(4, ["0"], 1).gpus_per_fold == 0.25
    assert local_resources(3, ["0", "1"], 1).gpus_per_fold == 0.5
    assert local_resources(2, ["0", "1", "2", "3"], 1).gpus_per_fold == 1.0
    cpu = local_resources(2, [], 3)
    assert (cpu.gpus_per_fold, cpu.slots, cpu.cpus_per_fold, cpu.threads) == (0.0, 2, 1.0, 3)


@pytest.mark.parametrize("flags, says", [
    (["--ray", "--parallel", "2"], "give one"),
    (["--cpus-per-fold", "2"], "need --ray"),
    (["--ray", "--gpus-per-fold", "1.5"], "a fraction below 1 or a whole number"),
    (["--ray", "--cpus-per-fold", "0"], "--cpus-per-fold must be > 0"),
])
def test_impossible_ray_flags_are_one_line(flags, says, monkeypatch, capsys):
    from carvana_seg.commands.train import main

    monkeypatch.setattr(sys, "argv", ["train_cv.py", "--config", str(REPO / "configs" / "tiny.yaml"), *flags])
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err
    assert stop.value.code == 2 and says in err and len([line for line in err.splitlines() if "config error" in line]) == 1, err


@pytest.mark.slow
def test_a_fold_no_node_could_run_is_refused_not_queued_forever(tmp_path, data_root, ray_cluster):
    """--gpus-per-fold 1 on a cluster without GPUs: one line naming the nodes, nothing claimed."""
    done = train_cv("--ray", ray_cluster.address, "--gpus-per-fold", "1", "--config", experiments(tmp_path / "configs")[0], *settings(tmp_path, data_root))
    assert done.returncode == 1 and "--gpus-per-fold 1: no Ray node has that much (the nodes: 1 CPU / 0 GPU" in done.stderr, done.stderr
    assert not (tmp_path / "runs" / "plain").exists()
