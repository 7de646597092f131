"""One fold, and one prediction, over two machines: two local "nodes" of one process each
(CPU, gloo, 127.0.0.1), each started by its own launcher as on two hosts."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_tiny_layout

from carvana_seg.data.folds import make_folds, write_folds
from carvana_seg.data.layout import CarvanaLayout
from carvana_seg.recipe.tune import tune
from carvana_seg.store.oof import OOF

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(launcher: list[str], rank_flag: str, script: list[str]) -> list[subprocess.CompletedProcess]:
    """Start the same launch as node 0 and node 1 (as two hosts would) and wait for both."""
    nodes = [subprocess.Popen([*launcher, rank_flag, str(rank), *script], cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    done = []
    for node in nodes:
        out, err = node.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(node.args, node.returncode, out, err))
    return done


def accelerate_two_machines() -> list[str]:
    """--multi_gpu: accelerate's torch.distributed launcher, which several machines need; on CPU
    (ACCELERATE_USE_CPU=1) its processes use gloo."""
    return [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_machines", "2", "--num_processes", "2", "--main_process_ip", "127.0.0.1",
            "--main_process_port", str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no", "-q"]


def torchrun_two_nodes() -> list[str]:
    return [shutil.which("torchrun", path=str(BIN)), "--nnodes", "2", "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(free_port())]


@pytest.mark.slow
def test_one_fold_over_two_machines_with_accelerate_launch(tmp_path):
    """`accelerate launch --multi_gpu --num_machines 2` on two local nodes: the fold trains once, every
    validation image lands in its OOF exactly once, and only node 0 prints the summary."""
    root = write_tiny_layout(tmp_path / "data", cars=4, angles=4, hw=(48, 72))
    write_folds(make_folds(CarvanaLayout(root), 2, seed=0), root / "folds.csv")
    settings = [f"data.root={root}", "data.size=32x48", "train.epochs=1", "train.batch_size=3", f"data.cache_dir={tmp_path / 'cache'}",
                f"exp.runs_dir={tmp_path / 'runs'}", f"exp.oof_dir={tmp_path / 'oof'}", "exp.name=nodes"]
    done = two_nodes(accelerate_two_machines(), "--machine_rank", ["scripts/train_cv.py", "--config", "configs/tiny.yaml", *settings, "--folds", "0"])
    assert [d.returncode for d in done] == [0, 0], done[0].stderr[-3000:] + done[1].stderr[-3000:]
    folds = pd.read_csv(root / "folds.csv")
    oof = OOF.load(tmp_path / "oof" / "nodes" / "fold0.npz")
    assert sorted(oof.ids.tolist()) == sorted(folds.loc[folds.fold == 0, "img"])  # each once: 8 images over 2 nodes x batch 3
    assert json.loads((tmp_path / "oof" / "nodes" / "fold0.json").read_text())["processes"] == 2
    summaries = [[line for line in d.stdout.splitlines() if line.split()[:1] == ["nodes"] and len(line.split()) == 4] for d in done]
    assert [len(rows) for rows in summaries] == [1, 0], [d.stdout for d in done]


@pytest.mark.slow
def test_prediction_over_two_nodes_is_byte_identical_to_one_process(trained, tmp_path):
    """`torchrun --nnodes 2`: the nodes take alternate chunks and node 0 joins them into the same
    bytes as one process writes."""
    recipe = tmp_path / "nodes.recipe.json"
    tune(["plain"], trained / "runs", name="nodes", out_dir=tmp_path)
    args = ["scripts/predict.py", "--recipe", str(recipe), "--chunk-images", "1", "--workers", "0"]
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one.csv")], cwd=REPO, env=ENV, capture_output=True, text=True, check=False)
    assert one.returncode == 0, one.stderr[-3000:]
    done = two_nodes(torchrun_two_nodes(), "--node_rank", [*args, "--out", str(tmp_path / "two.csv")])
    assert [d.returncode for d in done] == [0, 0], done[0].stderr[-3000:] + done[1].stderr[-3000:]
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "two.csv").read_bytes()
    assert len((tmp_path / "one.csv").read_text().splitlines()) == 1 + 4
