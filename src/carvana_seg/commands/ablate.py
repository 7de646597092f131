"""Train a grid of variants of one config on every fold, tune each, and rank them on a leaderboard.

    python scripts/ablate.py --config configs/demo/unet_plain.yaml --grid model.block=plain,se,res --grid train.lr=1e-3,2e-3
    python scripts/ablate.py --config configs/carvana_gpu/smp_unet_r34_640.yaml --grid train.lr=1e-4,3e-4 --ray HEAD:6379 --gpus-per-fold 0.5

Each `--grid KEY=V1,V2,...` is one axis; every combination is one experiment, named after the
config's experiment and the values (`unet_plain_block-se_lr-2e-3`). All their unfinished folds
are Ray tasks (`--ray ADDRESS` on a cluster; by default a local Ray runtime, `--parallel N` slots),
each experiment is tuned on its out-of-fold predictions (threshold, edge refinement,
post-processing: <out-dir>/<exp>.recipe.json), and <out-dir>/leaderboard.md ranks them.
Rerunning skips finished folds and recipes already written.

Manual: docs/training.md (ablations), docs/leaderboard.md
"""

from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path

from carvana_seg.commands.cli import console, parse_config_args, usage_error
from carvana_seg.commands.train import RAY_FLAGS, check_ray_flags, scheduler
from carvana_seg.config import Config, ConfigError, load_config
from carvana_seg.names import check_plain_name
from carvana_seg.recipe.tune import tune
from carvana_seg.reporting.leaderboard import RANKED_BY, build_leaderboard
from carvana_seg.training.cluster import LOCAL, train_on_ray
from carvana_seg.training.lifecycle import Interrupted, exit_stopped, stop_signals

NOT_PLAIN = re.compile(r"[^A-Za-z0-9._-]+")


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """`KEY=V1,V2` items as (key, values), refused in one line when malformed or repeated."""
    axes: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        listed = [v.strip() for v in values.split(",")]
        if not sep or not key or not all(listed):
            usage_error(f"--grid {item!r}: expected KEY=V1,V2,... (e.g. model.block=plain,se)")
        if key in (k for k, _ in axes) or key == "exp.name":
            usage_error(f"--grid {item!r}: {key} is " + ("the experiment's name, made from the grid" if key == "exp.name" else "already an axis"))
        axes.append((key, listed))
    return axes


def variant_name(base: str, axes: list[tuple[str, list[str]]], values: tuple[str, ...]) -> str:
    """`<base>_<key>-<value>_...`: each key by its last part (`block`, `lr`) unless two axes share it."""
    lasts = [key.rsplit(".", 1)[-1] for key, _ in axes]
    parts = [f"{last if lasts.count(last) == 1 else key}-{NOT_PLAIN.sub('-', value)}" for last, (key, _), value in zip(lasts, axes, values)]
    return check_plain_name("_".join([base, *parts]), "the grid's experiment name")


def variants(path: str, overrides: list[str], base: Config, axes: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    """(name, overrides) of every combination, each config loaded once here so a bad value is one line now."""
    out = []
    for values in itertools.product(*(listed for _, listed in axes)):
        name = variant_name(base.exp.name, axes, values)
        extra = [*overrides, *(f"{key}={value}" for (key, _), value in zip(axes, values)), f"exp.name={name}"]
        try:
            load_config(path, extra)
        except ConfigError as err:
            usage_error(str(err))
        out.append((name, extra))
    names = [name for name, _ in out]
    if len(set(names)) < len(names):
        usage_error(f"--grid: two combinations give one name ({', '.join(sorted({n for n in names if names.count(n) > 1}))}): choose values that differ once made plain")
    return out


def tune_each(names: list[str], runs_dir: str, tta: str, out_dir: Path) -> list[str]:
    """Each experiment's recipe (its threshold, refinement and post-processing tuned on its OOF);
    one written earlier is kept. Returns the recipe files."""
    recipes = []
    for name in names:
        recipe = out_dir / f"{name}.recipe.json"
        if recipe.is_file():
            print(f"{name}: tuned earlier ({recipe}), kept", flush=True)
        else:
            tuned = tune([name], runs_dir, tta, name=name, out_dir=out_dir)
            print(f"{name}: CV {tuned.cv['blend']['dice_final']:.5f} at threshold {tuned.threshold:.3f} ({recipe})", flush=True)
        recipes.append(str(recipe))
    return recipes


def main() -> None:
    flags = [
        ("--grid", {"action": "append", "required": True, "metavar": "KEY=V1,V2", "help": "one axis of the grid (repeat for more)"}),
        ("--out-dir", {"default": None, "help": "recipes and leaderboard (default: ablations/<the config's experiment name>)"}),
        ("--tta", {"default": "none", "help": "TTA for tuning and ranking: none | hflip | ..."}),
        ("--parallel", {"type": int, "default": 0, "metavar": "N", "help": "a local Ray runtime of N slots (default: this machine's cores)"}),
        *RAY_FLAGS,
    ]
    base, args = parse_config_args(__doc__, flags)
    if args.ray is None and not args.parallel:
        args.ray = LOCAL  # the default: a local Ray runtime of this machine's cores
    check_ray_flags(args)
    path = args.config or usage_error("--config: the grid's base preset is needed")
    grid = variants(path, args.overrides, base, parse_grid(args.grid))
    out_dir = Path(args.out_dir or Path("ablations") / check_plain_name(base.exp.name, "exp.name"))
    print(f"{len(grid)} experiments: {', '.join(name for name, _ in grid)}", flush=True)
    try:
        with stop_signals():
            train_on_ray([(path, extra) for _, extra in grid], None, *scheduler(args))
    except Interrupted as stop:
        exit_stopped(stop, f"{' '.join([sys.executable, *sys.argv])} (finished folds are skipped, stopped ones resume)")
    names = [name for name, _ in grid]
    recipes = tune_each(names, base.exp.runs_dir, args.tta, out_dir)
    table = build_leaderboard(base.exp.runs_dir, baseline=names[0], tta=args.tta, out_dir=out_dir, experiments=names, recipes=recipes)
    print(table[["experiment", RANKED_BY]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"written: {out_dir}/leaderboard.md, leaderboard.csv, leaderboard.png and a recipe per experiment")


cli = console(main)  # what scripts/ablate.py runs


if __name__ == "__main__":
    cli()
