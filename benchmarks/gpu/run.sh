#!/usr/bin/env bash
# The one command of a GPU session (README, "Measuring on a GPU"). Here, first: `make gpu-wheels`;
# then one device call:  command "bash benchmarks/gpu/run.sh", carry [".gpu_wheels"], timeout_s 600.
#
# Installs the carried wheels (.gpu_wheels/: what the GPU machine lacks) into /tmp/pydeps, prints
# nvidia-smi and the versions, then runs, each step under its own timeout and fail-soft (a step
# that fails or times out is reported, and the next one runs):
#   a_predict     benchmarks/predict.py --shape real --device cuda --chains new --counts 1000 5000
#                 --repeats 1 --batch-size 32 --workers 14 (the issue's 400 photos/s for 4 folds x 3 views);
#                 when it fails, benchmarks/gpu/predict_diag.py shows why (appended to a_predict.log)
#   b_decode      benchmarks/decode.py --device cuda --workers 14 --batch-size 32 --count 512
#   c_cuda_check  benchmarks/gpu/cuda_check.py: the chain on CUDA against OpenCV on the CPU
#   d_pytest      tests/test_chain.py, test_runs.py, test_device_decode.py (CPU tests: the machine's torch 2.11
#                 and the carried wheels against the suite)
# Everything lands in $OUT (at most 8 files come back): summary.txt (step statuses, then the
# environment), <step>.log for each step, the two result tables (predict_real_cuda_1000_5000.md,
# decode_cuda.md) and gpu_util.csv (time, step, load average, GPU %, GPU MiB, W every 2 s).
# The result tables are also left out of the working tree: each step's benchmarks/results file
# is put back as it was, since the tree there is a throw-away copy and here a dry run must not
# overwrite the committed CPU tables.
#
# The whole script keeps within BUDGET seconds (default 540): each step gets at most its cap and
# what is left. A small dry run on this CPU machine (no wheels, no GPU, about 2 minutes):
#   DEVICE=cpu COUNTS="8 16" PREDICT_BATCH=4 PREDICT_WORKERS=2 DECODE_COUNT=16 DECODE_WORKERS=2 DECODE_BATCH=4 \
#   INSTALL_WHEELS=0 STEPS="a b c" PYTHON=.venv/bin/python OUT=/tmp/gpu_out bash benchmarks/gpu/run.sh
set -u
START=$SECONDS
cd "$(dirname "$0")/../.." || exit 1
REPO=$PWD
OUT=${OUT:-/tmp/gpu_run_out}
DEVICE=${DEVICE:-cuda}
COUNTS=${COUNTS:-1000 5000}
PREDICT_BATCH=${PREDICT_BATCH:-32}
PREDICT_WORKERS=${PREDICT_WORKERS:-14}
DECODE_COUNT=${DECODE_COUNT:-512}
DECODE_WORKERS=${DECODE_WORKERS:-14}
DECODE_BATCH=${DECODE_BATCH:-32}
BUDGET=${BUDGET:-540}
STEPS=${STEPS:-a b c d}
INSTALL_WHEELS=${INSTALL_WHEELS:-1}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
WORK=$(mktemp -d)
ENV_LOG=$WORK/env.txt
STATUS=()
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
    [[ -n $SAMPLER ]] && kill "$SAMPLER" 2>/dev/null
    restore "$PENDING_RESTORE"
    {
        echo "# benchmarks/gpu/run.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), $((SECONDS - START)) s of a ${BUDGET} s budget"
        echo
        printf '%s\n' "${STATUS[@]}"
        echo
        cat "$ENV_LOG" 2>/dev/null
    } > "$OUT/summary.txt"
    echo
    echo "=================== summary ($((SECONDS - START)) s) ==================="
    printf '%s\n' "${STATUS[@]}"
    for f in "$OUT"/*.md; do [[ -f $f ]] && { echo; echo "----- $(basename "$f")"; cat "$f"; }; done
    echo
    echo "files in \$OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
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
        target=benchmarks/results/$result
        rm -f "$WORK/backup.md"
        [[ -f $target ]] && cp -p "$target" "$WORK/backup.md"
        rm -f "$target"
        PENDING_RESTORE=$target
    fi
    local t0=$SECONDS rc=0
    timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1 < /dev/null || rc=$?
    local took=$((SECONDS - t0)) state
    case $rc in
        0) state="ok" ;;
        124 | 137) state="TIMED OUT after ${limit} s (rc $rc)" ;;
        *) state="FAILED (rc $rc)" ;;
    esac
    echo "--- last lines of $name.log:"
    tail -n 25 "$OUT/$name.log"
    if [[ -n $target ]]; then
        if [[ -f $target ]]; then cp "$target" "$OUT/" && state+=", wrote $result"; else state+=", no $result"; fi
        restore "$target"
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
    # predict step then runs with fewer workers rather than reconfiguring the lent machine
    shm_mb=$(df -Pm /dev/shm 2> /dev/null | awk 'NR == 2 {print $2}')
    echo "/dev/shm: ${shm_mb:-?} MB"
    if [[ $DEVICE == cuda && -n $shm_mb ]] && ((shm_mb < 4096)); then
        echo "!!! /dev/shm is only ${shm_mb} MB: predict and decode run with 2 loader workers"
        PREDICT_WORKERS=2 DECODE_WORKERS=2
    fi
    if command -v nvidia-smi > /dev/null; then timeout 30 nvidia-smi; else echo "no nvidia-smi"; fi
    echo "python: $(command -v "$PY") $("$PY" -V 2>&1)"
    if [[ $INSTALL_WHEELS == 1 ]]; then
        if compgen -G ".gpu_wheels/*.whl" > /dev/null; then
            echo "installing $(ls .gpu_wheels/*.whl | wc -l) carried wheels into /tmp/pydeps:"
            ls .gpu_wheels/*.whl | xargs -n1 basename
            timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/pydeps .gpu_wheels/*.whl \
                && echo "installed" || echo "!!! pip install of .gpu_wheels FAILED: imports below will tell what is missing"
            PYDEPS=/tmp/pydeps
            for pair in yaml:pyyaml tqdm:tqdm safetensors:safetensors; do  # the machine's own copy if it imports, else the carried one
                module=${pair%%:*} wheel=${pair##*:}
                if ! "$PY" -c "import $module" 2> /dev/null; then
                    echo "$module does not import here: installing the carried $wheel wheel into /tmp/pydeps-fallback"
                    timeout 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/pydeps-fallback .gpu_wheels/fallback/"$wheel"-*.whl \
                        || echo "!!! fallback $wheel FAILED"
                    [[ $PYDEPS == *fallback* ]] || PYDEPS=$PYDEPS:/tmp/pydeps-fallback
                fi
            done
        else
            echo "!!! no .gpu_wheels/*.whl: run 'make gpu-wheels' here and name .gpu_wheels in the call's carry"
        fi
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
for name in ["carvana_seg.inference.submit", "carvana_seg.training.cv", "carvana_seg.core.device_photos", "carvana_seg.models"]:
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
echo "time,step,load1,gpu_util_pct,gpu_mem_mib,power_w" > "$OUT/gpu_util.csv"
(
    while :; do
        gpu=$(nvidia-smi --query-gpu=utilization.gpu,memory.used,power.draw --format=csv,noheader,nounits 2> /dev/null | head -1)
        echo "$(date -u +%T),$(cat "$WORK/step" 2> /dev/null),$(cut -d' ' -f1 /proc/loadavg 2> /dev/null),${gpu:-no nvidia-smi}"
        sleep 2
    done
) >> "$OUT/gpu_util.csv" 2> /dev/null &
SAMPLER=$!

# ---------------------------------------------------------------- the steps
suffix=_${COUNTS// /_}
[[ $COUNTS == "32 160" ]] && suffix=  # predict.py names a run at its default counts without them
step a a_predict 330 "predict_real_${DEVICE}${suffix}.md" \
    "$PY" benchmarks/predict.py --shape real --device "$DEVICE" --chains new --counts $COUNTS --repeats 1 --batch-size "$PREDICT_BATCH" --workers "$PREDICT_WORKERS"
if [[ ${STATUS[-1]} == a_predict:\ FAILED* ]]; then  # its workers' stderr is captured: the same in one process, traceback shown
    step a a_predict_diag 120 "" "$PY" benchmarks/gpu/predict_diag.py "$DEVICE" "$PREDICT_BATCH" "$PREDICT_WORKERS"
    { echo; echo "=================== a_predict_diag.log"; cat "$OUT/a_predict_diag.log"; } >> "$OUT/a_predict.log" && rm -f "$OUT/a_predict_diag.log"  # 8 files come back at most
fi
step b b_decode 200 "decode_${DEVICE}.md" \
    "$PY" benchmarks/decode.py --device "$DEVICE" --workers "$DECODE_WORKERS" --batch-size "$DECODE_BATCH" --count "$DECODE_COUNT"
step c c_cuda_check 90 "" \
    "$PY" benchmarks/gpu/cuda_check.py --device "$DEVICE"
step d d_pytest 120 "" \
    "$PY" -m pytest -q -p no:cacheprovider tests/test_chain.py tests/test_runs.py tests/test_device_decode.py
