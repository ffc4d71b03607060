#!/usr/bin/env bash
# Everything issue 17 measures on a GPU, in one script that runs on the GPU machine (no network there).
#
#   bash finetune/gpu_check.sh stage                 # copy the carried .gpu/cN folder(s) to $PAYLOAD
#   bash finetune/gpu_check.sh run [--device cpu]    # join and check the payload, then every step
#
# `make gpu-payload` makes .gpu/c1, .gpu/c2, ... (finetune/gpu_payload.py). On the GPU machine, one device
# `run` call per folder, back to back while the machine stays warm (it keeps /tmp between calls):
#   carry [".gpu/c1"]: bash finetune/gpu_check.sh stage
#   carry [".gpu/c2"]: bash finetune/gpu_check.sh stage
#   carry [".gpu/c3"]: bash finetune/gpu_check.sh stage && bash finetune/gpu_check.sh run
# `run` checks every piece against the manifest (and says which call is missing), installs the wheels
# into $PAYLOAD/site, and runs, each step under its own time limit so that one hang cannot eat the
# session: the GPU tests, bench-finetune (ours vs the textbook peft loop, then one epoch of medquad_sft),
# bench-generate's rows, and the epoch's adapter answering through the assistant's generator on the GPU.
# Results go to $OUT (the device tool brings that folder back: at most 8 files), or runs/gpu-check:
# summary.json (each step's exit status and seconds), finetune.json, generate.json, loss_curve.png and
# the four steps' logs.
#
# `--device cpu` rehearses the same path small on a CPU (tests/test_gpu_check.py does, in `make test`):
# tiny bench sizes, the training file given by $GPU_CHECK_TRAIN_FILE.
set -uo pipefail

PAYLOAD=${PAYLOAD:-/tmp/ra-payload}
SOURCE=${GPU_PAYLOAD_SOURCE:-.gpu}  # where the carried cN folders are (relative to the repository)
OUT=${OUT:-runs/gpu-check}
PYTHON=${GPU_PYTHON:-python3}
ADAPTER_QUESTION="What are the symptoms of glaucoma?"  # medquad-style: the epoch's adapter answers it
HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE" || exit 1

stage() {
    mkdir -p "$PAYLOAD"
    local found=0
    for call in "$SOURCE"/c*; do
        [ -d "$call" ] || continue
        cp -r "$call"/. "$PAYLOAD"/ && found=1 && echo "staged $call"
    done
    [ "$found" = 1 ] || { echo "nothing to stage: carry a .gpu/cN folder (make gpu-payload makes them)"; exit 2; }
}

# payload_ready: every piece the manifest names is in $PAYLOAD; the model is joined and its SHA-256 checked
payload_ready() {
    "$PYTHON" - "$PAYLOAD" <<'EOF'
import hashlib, json, sys
from pathlib import Path
root = Path(sys.argv[1])
manifest = json.loads((root / "manifest.json").read_text())
missing = [f for f, where in manifest["files"].items() if not (root / where.split("/", 1)[1]).exists()]
if missing:
    calls = sorted({manifest["files"][f].split("/")[0] for f in missing})
    sys.exit(f"payload incomplete: {len(missing)} file(s) missing; stage {', '.join(calls)} first")
model = manifest["model"]
joined = root / model["name"]
if not joined.exists() or joined.stat().st_size != model["bytes"]:
    with joined.open("wb") as out:
        for piece in model["pieces"]:
            out.write((root / "model" / piece).read_bytes())
digest = hashlib.sha256(joined.read_bytes()).hexdigest()
if digest != model["sha256"]:
    sys.exit(f"{joined}: SHA-256 {digest} is not the manifest's {model['sha256']}: stage the calls again")
for entry in manifest["data"]:
    path = root / "medquad_sft" / entry["name"]
    if hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
        sys.exit(f"{path}: SHA-256 differs from the manifest's: stage the calls again")
print(f"payload ready: {joined} ({model['bytes']:,} bytes), {len(manifest['wheels'])} wheels, "
      f"{len(manifest['data'])} data files")
EOF
}

declare -A STATUS SECONDS_TAKEN
step() {  # step NAME LIMIT_SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    echo "=== $name (limit ${limit}s)"
    timeout --kill-after=20 "$limit" "$@" > "$OUT/$name.log" 2>&1
    STATUS[$name]=$?
    SECONDS_TAKEN[$name]=$((SECONDS - start))
    tail -n 25 "$OUT/$name.log"
    echo "=== $name: exit ${STATUS[$name]} after ${SECONDS_TAKEN[$name]}s"
}

run() {
    local device=cuda
    [ "${1:-}" = "--device" ] && device=${2:-cuda}
    mkdir -p "$OUT"
    payload_ready || exit 3
    if compgen -G "$PAYLOAD/whl/*.whl" > /dev/null; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$PAYLOAD/site" "$PAYLOAD"/whl/*.whl || exit 4
        export PYTHONPATH="$PAYLOAD/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
    export RA_BUNDLED_GGUF="$PAYLOAD/$("$PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))['model']['name'])" "$PAYLOAD/manifest.json")"
    if [ -f "$PAYLOAD/medquad_sft/train.jsonl" ] && [ ! -e ../shared/data/medquad_sft ]; then
        mkdir -p ../shared/data && ln -s "$PAYLOAD/medquad_sft" ../shared/data/medquad_sft  # where the configs read it
    fi
    if [ "$device" = cuda ]; then
        "$PYTHON" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" || exit 5
        step gpu_tests 240 "$PYTHON" -m pytest -m gpu tests/test_finetune.py -q -p no:cacheprovider
        step bench_finetune 420 "$PYTHON" -m finetune.bench --quality --quality-dir "$PAYLOAD/finetune-medquad" \
            --json "$OUT/finetune.json"
        step bench_generate 240 "$PYTHON" -m assistant.tools.bench_generate --backends transformers \
            --json "$OUT/generate.json"
        step adapter_answers 120 "$PYTHON" -m assistant generate "$ADAPTER_QUESTION" --backend transformers \
            --device cuda --adapter "$PAYLOAD/finetune-medquad/adapter"
    else  # the rehearsal: the same steps, small
        step gpu_tests 240 "$PYTHON" -m pytest -m gpu tests/test_finetune.py -q -p no:cacheprovider
        step bench_finetune 420 "$PYTHON" -m finetune.bench --quality --device cpu --steps 2 --batch-size 2 \
            --max-length 128 --train-file "${GPU_CHECK_TRAIN_FILE:?set GPU_CHECK_TRAIN_FILE for --device cpu}" \
            --quality-dir "$PAYLOAD/finetune-medquad" --json "$OUT/finetune.json"
        step bench_generate 240 "$PYTHON" -m assistant.tools.bench_generate --backends transformers --runs 1 \
            --max-new-tokens 8 --json "$OUT/generate.json"
        step adapter_answers 120 "$PYTHON" -m assistant generate "$ADAPTER_QUESTION" --backend transformers \
            --device cpu --max-new-tokens 8 --adapter "$PAYLOAD/finetune-medquad/adapter"
    fi
    [ -f "$PAYLOAD/finetune-medquad/loss_curve.png" ] && cp "$PAYLOAD/finetune-medquad/loss_curve.png" "$OUT/"
    local json="{" sep="" failed=0
    for name in gpu_tests bench_finetune bench_generate adapter_answers; do
        json+="$sep\"$name\": {\"exit\": ${STATUS[$name]}, \"seconds\": ${SECONDS_TAKEN[$name]}}"
        sep=", "
        [ "${STATUS[$name]}" = 0 ] || failed=1
    done
    echo "$json, \"device\": \"$device\"}" > "$OUT/summary.json"
    cat "$OUT/summary.json"
    return $failed
}

case "${1:-}" in
    stage) stage ;;
    run) shift; run "$@" ;;
    *) echo "usage: bash finetune/gpu_check.sh stage | run [--device cpu]"; exit 2 ;;
esac
