#!/usr/bin/env bash
# The local Ray runtime's cost against the process pool it replaced: `train_cv.py --parallel 2`
# on the tiny config (2 folds, one epoch, 32x48, one torch thread per fold), each version timed
# as a whole command, in turn (new, old, new, old, ...) after one warm-up run each.
#
#   bash benchmarks/ray_overhead.sh [RUNS] [OLD_REV]
#
# OLD_REV (default 3cde223) is a commit whose training/parallel.py is the process pool; its src/,
# scripts/ and configs/ are unpacked into a temporary folder and run with this .venv.
set -euo pipefail
if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then sed -n '2,9p' "$0" | cut -c3-; exit 0; fi
cd "$(dirname "$0")/.."
runs=${1:-3}
old_rev=${2:-3cde223}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
py=$PWD/.venv/bin/python
mkdir "$work/old"
git archive "$old_rev" src scripts configs | tar -x -C "$work/old"
$py scripts/make_synthetic.py --out "$work/data" --cars 4 --test-cars 1 --size 72x48 --seed 0 >/dev/null
$py scripts/make_folds.py --config configs/tiny.yaml data.root="$work/data" >/dev/null 2>&1

one() {  # one run of version $1 (new|old); prints its wall seconds
    local which=$1 dir=$PWD pythonpath=${PYTHONPATH:-}
    if [ "$which" = old ]; then dir=$work/old; pythonpath=$work/old/src; fi
    rm -rf "$work/$which-runs" "$work/$which-oof"
    local start end
    start=$(date +%s.%N)
    (cd "$dir" && PYTHONPATH=$pythonpath OMP_NUM_THREADS=1 ACCELERATE_USE_CPU=1 RAY_USAGE_STATS_ENABLED=0 \
        $py scripts/train_cv.py --parallel 2 --config configs/tiny.yaml data.root="$work/data" data.size=32x48 train.epochs=1 \
        data.cache_dir="$work/$which-cache" exp.runs_dir="$work/$which-runs" exp.oof_dir="$work/$which-oof" exp.name=bench \
        >"$work/$which.log" 2>&1) || { cat "$work/$which.log"; exit 1; }
    end=$(date +%s.%N)
    $py -c "print(round($end - $start, 2))"
}

one new >/dev/null; one old >/dev/null  # warm-up: caches built, files read once
new=(); old=()
for _ in $(seq "$runs"); do new+=("$(one new)"); old+=("$(one old)"); done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo "Ray path (local runtime, 2 slots): ${new[*]} s; median $(median "${new[@]}") s"
echo "process pool ($old_rev):            ${old[*]} s; median $(median "${old[@]}") s"
