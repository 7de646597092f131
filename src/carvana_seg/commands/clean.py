"""Free disk space: remove whole experiments, or the resume state of finished folds.

    python scripts/clean.py --exp my_unet --dry-run
    python scripts/clean.py --exp my_unet --exp my_se
    python scripts/clean.py --finished-state --runs-dir runs/carvana

`--exp NAME` removes exactly runs/NAME and oof/NAME, so the name can be trained again with
another config; it is refused when the config saved in runs/NAME names other folders (a copied
run folder; its relative folders are read from where training ran, so --runs-dir /abs/runs
works from anywhere). `--finished-state` removes runs/<exp>/fold<k>/state/ of every finished fold
(training already drops it unless train.keep_state=true). Names must be plain names (letters,
digits, `._-`). Nothing is removed through a symbolic link, nor while a fold is being trained.

Manual: docs/training.md
"""


from carvana_seg.cleanup import experiment_folders, finished_states, folder_bytes, foreign_experiments, refuse_folds_in_training, remove
from carvana_seg.commands.cli import command_parser
from carvana_seg.errors import PipelineError


def main() -> None:
    parser = command_parser(__doc__)
    parser.add_argument("--exp", action="append", default=[], help="experiment to remove; repeat for several")
    parser.add_argument("--finished-state", action="store_true", help="remove the resume state of every finished fold")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--oof-dir", default="oof", help="where --exp's OOF folders are")
    parser.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    args = parser.parse_args()
    if not args.exp and not args.finished_state:
        raise PipelineError("nothing to clean: give --exp NAME or --finished-state")
    names = dict.fromkeys(args.exp)  # a name given twice is removed once
    folders = [f for exp in names for f in experiment_folders(exp, args.runs_dir, args.oof_dir)]  # every name checked before anything goes
    if args.finished_state:
        folders += [f for f in finished_states(args.runs_dir) if not any(f.is_relative_to(g) for g in folders)]
        for note in foreign_experiments(args.runs_dir):
            print(note)
    refuse_folds_in_training(folders)
    for folder in folders:
        print(f"{'would remove' if args.dry_run else 'removing'} {folder} ({folder_bytes(folder) / 1e6:.1f} MB)")
    if not args.dry_run:
        print(f"freed {remove(folders) / 1e6:.1f} MB")
