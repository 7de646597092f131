#!/usr/bin/env bash
# Benchmarks and CUDA checks of prediction on one CUDA machine, in one command (docs/gpu.md):
#
#   bash benchmarks/gpu/run.sh [--out DIR] [--wheels DIR] [--budget SECONDS]
#
#   --out DIR      where the result tables go (default benchmarks/results/); the run's logs go to
#                  DIR/gpu_run/: summary.txt (each step's status, then the environment), <step>.log
#                  for each step, gpu_util.csv (time, step, load average, GPU %, GPU MiB, W every 2 s)
#   --wheels DIR   first install the wheels in DIR (no index, no dependencies) into a temporary
#                  folder put on PYTHONPATH: for a machine without internet that lacks some of the
#                  project's packages (`make gpu-wheels` downloads them into .gpu_wheels/)
#   --budget S     the whole run keeps within S seconds (default 540): each step gets at most its
#                  own cap and what is left, and a step that fails or times out is reported while
#                  the next one runs
#
# Prints nvidia-smi and the versions, then runs these steps:
#   a_predict     benchmarks/predict.py --shape real --device cuda --chains new --counts 1000 5000
#                 --repeats 1 --batch-size 32 --workers 14 (photos/s of the 4-fold x 3-view recipe;
#                 the goal is 400/s); when it fails, benchmarks/gpu/predict_diag.py shows why
#                 (appended to a_predict.log)
#   b_decode      benchmarks/decode.py --device cuda --workers 14 --batch-size 32 --count 512
#   c_cuda_check  benchmarks/gpu/cuda_check.py: the chain on CUDA against OpenCV on the CPU
#   d_pytest      tests/test_chain.py, test_runs.py, test_device_decode.py (CPU tests: this
#                 machine's torch and packages against the suite)
# The result tables (predict_real_cuda_1000_5000.md, decode_cuda.md) land in DIR. The benchmark
# scripts write them into benchmarks/results/; with another DIR each is copied there and the
# benchmarks/results file is put back as it was, so a run elsewhere changes nothing in the tree.
#
# A small dry run on a CPU (no GPU, about 2 minutes):
#   DEVICE=cpu COUNTS="8 16" PREDICT_BATCH=4 PREDICT_WORKERS=2 DECODE_COUNT=16 DECODE_WORKERS=2 DECODE_BATCH=4 \
#   STEPS="a b c" PYTHON=.venv/bin/python bash benchmarks/gpu/run.sh --out /tmp/gpu_out
set -u
START=$SECONDS
DEST=
WHEELS=
BUDGET=540
while (($#)); do
    case $1 in
        --out | --wheels | --budget)
            (($# >= 2)) || { echo "error: $1 needs a value (run.sh --help)" >&2; exit 1; }
            case $1 in --out) DEST=$2 ;; --wheels) WHEELS=$2 ;; --budget) BUDGET=$2 ;; esac
            shift 2 ;;
        -h | --help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: $1: unknown option (run.sh takes --out DIR, --wheels DIR, --budget SECONDS)" >&2; exit 1 ;;
    esac
done
[[ $BUDGET =~ ^[0-9]+$ ]] || { echo "error: --budget $BUDGET: expected whole seconds" >&2; exit 1; }
if [[ -n $WHEELS ]]; then  # both folders as the caller named them, before the cd below
    compgen -G "$WHEELS/*.whl" > /dev/null || { echo "error: --wheels $WHEELS: no .whl files there (make gpu-wheels writes .gpu_wheels/)" >&2; exit 1; }
    WHEELS=$(cd "$WHEELS" && pwd)
fi
if [[ -n $DEST ]]; then mkdir -p "$DEST" && DEST=$(cd "$DEST" && pwd) || exit 1; fi
cd "$(dirname "$0")/../.." || exit 1
REPO=$PWD
RESULTS=$REPO/benchmarks/results
DEST=${DEST:-$RESULTS}
LOGS=$DEST/gpu_run
DEVICE=${DEVICE:-cuda}
COUNTS=${COUNTS:-1000 5000}
PREDICT_BATCH=${PREDICT_BATCH:-32}
PREDICT_WORKERS=${PREDICT_WORKERS:-14}
DECODE_COUNT=${DECODE_COUNT:-512}
DECODE_WORKERS=${DECODE_WORKERS:-14}
DECODE_BATCH=${DECODE_BATCH:-32}
STEPS=${STEPS:-a b c d}
PY=${PYTHON:-python3}
mkdir -p "$LOGS" || exit 1
WORK=$(mktemp -d)
ENV_LOG=$WORK/env.txt
STATUS=()
WROTE=()
MAIN_PID=$BASHPID
SAMPLER=
PENDING_RESTORE=
PYDEPS=

export PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1 MPLBACKEND=Agg HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

restore() {  # put back a results file that a step replaced ("" when none pending)
    local target=$1
    [[ -z $target ]] && return
    if [[ -f $WORK/backup.md ]]; then cp -p "$WORK/backup.md" "$target" && rm -f "$WORK/backup.md"; else rm -f "$target"; fi
    PENDING_RESTORE=
}

finish() {
    [[ $BASHPID == "$MAIN_PID" ]] || exit 0  # a child forked just before a signal: the main shell reports
    [[ -n $SAMPLER ]] && kill "$SAMPLER" 2>/dev/null
    restore "$PENDING_RESTORE"
    {
        echo "# benchmarks/gpu/run.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), $((SECONDS - START)) s of a ${BUDGET} s budget"
        echo
        printf '%s\n' "${STATUS[@]}"
        echo
        cat "$ENV_LOG" 2>/dev/null
    } > "$LOGS/summary.txt"
    echo
    echo "=================== summary ($((SECONDS - START)) s) ==================="
    printf '%s\n' "${STATUS[@]}"
    for f in "${WROTE[@]}"; do echo; echo "----- $f"; cat "$f"; done
    echo
    echo "logs in $LOGS: $(cd "$LOGS" && ls | tr '\n' ' ')"
    rm -rf "$WORK"
}
trap finish EXIT
trap 'exit 130' INT TERM

step() {  # step LETTER NAME CAP RESULT_MD COMMAND... : one step, its own timeout, fail-soft
    local letter=$1 name=$2 cap=$3 result=$4
    shift 4
    [[ " $STEPS " == *" $letter "* ]] || { STATUS+=("$name: not asked for (STEPS=\"$STEPS\")"); return 0; }
    local left=$((BUDGET - (SECONDS - START) - 15))
    local limit=$((cap < left ? cap : left))
    echo
    echo "=================== $name ($(date -u +%T), limit ${limit} s, $((SECONDS - START)) s in) ==================="
    echo "$ $*"
    if ((limit < 20)); then
        echo "skipped: ${left} s left of the ${BUDGET} s budget"
        STATUS+=("$name: SKIPPED (budget spent)")
        return 0
    fi
    echo "$name" > "$WORK/step"
    local target=
    if [[ -n $result ]]; then
        target=$RESULTS/$result
        rm -f "$WORK/backup.md"
        [[ -f $target ]] && cp -p "$target" "$WORK/backup.md"
        rm -f "$target"
        PENDING_RESTORE=$target
    fi
    local t0=$SECONDS rc=0
    timeout -k 10 "$limit" "$@" > "$LOGS/$name.log" 2>&1 < /dev/null || rc=$?
    local took=$((SECONDS - t0)) state
    case $rc in
        0) state="ok" ;;
        124 | 137) state="TIMED OUT after ${limit} s (rc $rc)" ;;
        *) state="FAILED (rc $rc)" ;;
    esac
    echo "--- last lines of $name.log:"
    tail -n 25 "$LOGS/$name.log"
    if [[ -n $target ]]; then
        if [[ ! -f $target ]]; then
            state+=", no $result"
        elif [[ $DEST == "$RESULTS" ]] || cp "$target" "$DEST/"; then
            state+=", wrote $DEST/$result" && WROTE+=("$DEST/$result")
        fi
        if [[ $DEST == "$RESULTS" && -f $target ]]; then rm -f "$WORK/backup.md" && PENDING_RESTORE=; else restore "$target"; fi
    fi
    echo "--- $name: $state in ${took} s"
    STATUS+=("$name: $state in ${took} s")
    echo "-" > "$WORK/step"
}

# ---------------------------------------------------------------- environment
{
    echo "=================== environment ($(date -u '+%Y-%m-%d %H:%M:%S UTC'))"
    echo "host $(uname -srm), $(nproc) CPUs"
    free -g 2>/dev/null | head -2
    # 14 loader workers hand batches over in /dev/shm (GBs in flight): a small one is reported, and the
    # predict step then runs with fewer workers rather than changing the machine's settings
    shm_mb=$(df -Pm /dev/shm 2> /dev/null | awk 'NR == 2 {print $2}')
    echo "/dev/shm: ${shm_mb:-?} MB"
    if [[ $DEVICE == cuda && -n $shm_mb ]] && ((shm_mb < 4096)); then
        echo "!!! /dev/shm is only ${shm_mb} MB: predict and decode run with 2 loader workers"
        PREDICT_WORKERS=2 DECODE_WORKERS=2
    fi
    if command -v nvidia-smi > /dev/null; then timeout 30 nvidia-smi; else echo "no nvidia-smi"; fi
    echo "python: $(command -v "$PY") $("$PY" -V 2>&1)"
    if [[ -n $WHEELS ]]; then
        echo "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $WORK/pydeps:"
        ls "$WHEELS"/*.whl | xargs -n1 basename
        timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/pydeps" "$WHEELS"/*.whl \
            && echo "installed" || echo "!!! pip install of $WHEELS FAILED: imports below will tell what is missing"
        PYDEPS=$WORK/pydeps
        for pair in yaml:pyyaml tqdm:tqdm safetensors:safetensors; do  # the machine's own copy if it imports, else the one in fallback/
            module=${pair%%:*} wheel=${pair##*:}
            if ! "$PY" -c "import $module" 2> /dev/null; then
                echo "$module does not import here: installing $WHEELS/fallback/$wheel-*.whl into $WORK/pydeps-fallback"
                timeout 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/pydeps-fallback" "$WHEELS"/fallback/"$wheel"-*.whl \
                    || echo "!!! fallback $wheel FAILED"
                [[ $PYDEPS == *fallback* ]] || PYDEPS=$PYDEPS:$WORK/pydeps-fallback
            fi
        done
    fi
} > "$ENV_LOG" 2>&1  # a group, not a subshell: PYDEPS stays set
export PYTHONPATH=${PYDEPS:+$PYDEPS:}$REPO/src${PYTHONPATH:+:$PYTHONPATH}
echo "PYTHONPATH=$PYTHONPATH" >> "$ENV_LOG"
timeout 120 "$PY" - >> "$ENV_LOG" 2>&1 <<'EOF'
import importlib, time
start = time.perf_counter()
import torch
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), cuda available: {torch.cuda.is_available()}, {torch.get_num_threads()} threads")
if torch.cuda.is_available():
    print("device:", torch.cuda.get_device_name(0), f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
for name in ["torchvision", "numpy", "cv2", "pandas", "scipy", "sklearn", "PIL", "accelerate", "timm", "segmentation_models_pytorch",
             "albumentations", "albucore", "pydantic", "pydantic_core", "typing_extensions", "simsimd", "stringzilla", "torchinfo",
             "yaml", "tqdm", "safetensors", "huggingface_hub", "matplotlib", "onnx", "onnxruntime", "pytest", "hypothesis"]:
    try:
        module = importlib.import_module(name)
        print(f"  {name:28s} {str(getattr(module, '__version__', '?')):14s} {getattr(module, '__file__', '')}")
    except Exception as error:  # noqa: BLE001
        print(f"  {name:28s} !!! {type(error).__name__}: {error}")
for name in ["carvana_seg.inference.submit", "carvana_seg.training.cv", "carvana_seg.data.device_photos", "carvana_seg.models"]:
    try:
        importlib.import_module(name)
        print(f"  import {name}: ok")
    except Exception as error:  # noqa: BLE001
        print(f"  import {name}: !!! {type(error).__name__}: {error}")
if torch.cuda.is_available():
    x = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    print("cuda matmul ok:", float((x @ x).float().abs().mean()))
print(f"({time.perf_counter() - start:.1f} s)")
EOF
cat "$ENV_LOG"

# ---------------------------------------------------------------- GPU use while the steps run
echo "time,step,load1,gpu_util_pct,gpu_mem_mib,power_w" > "$LOGS/gpu_util.csv"
(
    trap - EXIT INT TERM
    while :; do
        gpu=$(nvidia-smi --query-gpu=utilization.gpu,memory.used,power.draw --format=csv,noheader,nounits 2> /dev/null | head -1)
        echo "$(date -u +%T),$(cat "$WORK/step" 2> /dev/null),$(cut -d' ' -f1 /proc/loadavg 2> /dev/null),${gpu:-no nvidia-smi}"
        sleep 2
    done
) >> "$LOGS/gpu_util.csv" 2> /dev/null &
SAMPLER=$!

# ---------------------------------------------------------------- the steps
suffix=_${COUNTS// /_}
[[ $COUNTS == "32 160" ]] && suffix=  # predict.py names a run at its default counts without them
step a a_predict 330 "predict_real_${DEVICE}${suffix}.md" \
    "$PY" benchmarks/predict.py --shape real --device "$DEVICE" --chains new --counts $COUNTS --repeats 1 --batch-size "$PREDICT_BATCH" --workers "$PREDICT_WORKERS"
if [[ ${STATUS[-1]} == a_predict:\ FAILED* ]]; then  # its workers' stderr is captured: the same in one process, traceback shown
    step a a_predict_diag 120 "" "$PY" benchmarks/gpu/predict_diag.py "$DEVICE" "$PREDICT_BATCH" "$PREDICT_WORKERS"
    { echo; echo "=================== a_predict_diag.log"; cat "$LOGS/a_predict_diag.log"; } >> "$LOGS/a_predict.log" && rm -f "$LOGS/a_predict_diag.log"  # one log per step
fi
step b b_decode 200 "decode_${DEVICE}.md" \
    "$PY" benchmarks/decode.py --device "$DEVICE" --workers "$DECODE_WORKERS" --batch-size "$DECODE_BATCH" --count "$DECODE_COUNT"
step c c_cuda_check 90 "" \
    "$PY" benchmarks/gpu/cuda_check.py --device "$DEVICE"
step d d_pytest 120 "" \
    "$PY" -m pytest -q -p no:cacheprovider tests/test_chain.py tests/test_runs.py tests/test_device_decode.py
