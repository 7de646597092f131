"""What a Ray task runs on a node, kept free of torch so that a Ray worker starts without importing it.

`run_fold` is one fold's task (training/cluster.py sends it): the fold trains in a child process
(`python -m carvana_seg.commands.train_fold ... --resume`) in the driver's working folder, its
output appended to runs/<exp>/fold<k>/train.log after one header line naming the node. The child
holds the fold's lock itself (training/lifecycle.py); the task only refuses to start it while
another process holds that lock. `read_markers` is the shared-storage check's task.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

from carvana_seg.locks import holder

STOP_WITH_PARENT = "CARVANA_SEG_PARENT_PID"  # a fold's process gets SIGTERM when this process (its task's worker) dies
HEADER = "==== "  # the first line a task appends to the fold's train.log
POLL_SECONDS = 0.5  # how often a task looks whether its fold's process has ended


def run_fold(spec: dict) -> dict:
    """The body of a fold's Ray task: the fold's own child process, its output appended to train.log.
    Refuses (without touching the log) when another process has started training the fold since
    the driver checked it. A cancelled task stops its child with one SIGTERM and waits for it."""
    who = holder(spec["lock"])
    if who:
        return {"returncode": None, "seconds": 0.0, "where": "", "refused": f"being trained by {who}"}
    import ray  # noqa: PLC0415 - inside a Ray worker

    node = f"{ray.util.get_node_ip_address()} node {ray.get_runtime_context().get_node_id()[:8]}"  # several nodes may share an address
    where = node + (f" GPU {os.environ['CUDA_VISIBLE_DEVICES']}" if os.environ.get("CUDA_VISIBLE_DEVICES") else "")
    threads = str(spec["threads"])
    env = {**os.environ, **spec["env"], "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TQDM_DISABLE": "1", STOP_WITH_PARENT: str(os.getpid())}
    command = [sys.executable, *spec["command"]]
    Path(spec["log"]).parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(spec["log"], "a") as log:  # appended: a resumed fold keeps its earlier sessions' output
        log.write(f"{HEADER}{time.strftime('%Y-%m-%d %H:%M:%S')} on {where}: {' '.join(command)}\n")
        log.flush()
        child = subprocess.Popen(command, cwd=spec["cwd"], stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            while (code := child.poll()) is None:  # polled: ray.cancel's KeyboardInterrupt cannot reach a blocking wait()
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:  # ray.cancel: the child stops after its current step, keeping its last saved epoch
            child.terminate()
            child.wait()
            raise
    return {"returncode": code, "seconds": time.perf_counter() - started, "where": where, "refused": ""}


def read_markers(markers: dict[str, str], digests: dict[str, str]) -> tuple[str, list[str]]:
    """On one node: (its address, the folders whose marker is missing or differs, or whose file
    has other bytes than the driver's)."""
    import ray  # noqa: PLC0415 - inside a Ray worker

    missing = []
    for folder, marker in markers.items():
        path = Path(marker)
        if not path.is_file() or path.read_text() != path.name:
            missing.append(folder)
    for path, digest in digests.items():
        if not Path(path).is_file() or hashlib.sha256(Path(path).read_bytes()).hexdigest() != digest:
            missing.append(str(Path(path).parent))
    return ray.util.get_node_ip_address(), missing
