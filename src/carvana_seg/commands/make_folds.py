"""Write grouped, area-stratified folds for a dataset: `folds.csv` (img, car, fold).

    python scripts/make_folds.py --config configs/demo/unet_res.yaml
    python scripts/make_folds.py --config configs/carvana_cpu/unet_res_256_shuffle.yaml
    python scripts/make_folds.py --config configs/demo/unet_res.yaml data.folds=5 data.folds_file=input/folds/demo_5.csv

The file is data.folds_file (default <data.root>/folds.csv), made once per data folder and
reused by every experiment; an existing file with another split is refused unless --force
replaces it (then retrain every experiment).

Manual: docs/data.md
"""

import sys

from carvana_seg.commands.cli import parse_config_args
from carvana_seg.data.folds import incomplete_cars, make_folds, write_folds
from carvana_seg.data.layout import PHOTOS_PER_CAR
from carvana_seg.data.layouts import open_layout


def main() -> None:
    cfg, args = parse_config_args(__doc__, extra=[("--force", {"action": "store_true", "help": "replace a different folds file"})])
    layout = open_layout(cfg.data)
    for car, photos in incomplete_cars(layout.train_ids).items() if cfg.data.layout == "carvana" else ():
        print(f"warning: car {car} has {photos} of {PHOTOS_PER_CAR} photos in {layout.root / 'train'}", file=sys.stderr)
    folds = make_folds(layout, cfg.data.folds, cfg.data.fold_seed, cfg.data)
    path = cfg.data.folds_path
    written = write_folds(folds, path, force=args.force)
    sizes = folds.groupby("fold").agg(images=("img", "size"), cars=("car", "nunique"))
    print(sizes.to_string())
    print(f"{'wrote' if written else 'unchanged'}: {path}")
