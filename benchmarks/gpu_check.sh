#!/usr/bin/env bash
# GPU checks and GPU benchmarks, run from the repository root on a machine with an NVIDIA GPU, CuPy and
# torch (CUDA) installed, plus the package's other requirements (the [gpu] extra brings dask-cuda):
#
#     bash benchmarks/gpu_check.sh [OUTDIR]          (STEPS="tests throughput ..." runs some steps only)
#
# Each step runs under its own time limit and reports its exit status; the log goes to OUTDIR/gpu_check.log.
# Steps: the GPU tests; Table 1 on the GPU; the CLI with --gpus 1 (simulate, reconstruct, evaluate); a large
# scan's throughput on the GPU; a training set simulated on the GPU; training under torchrun (DDP, NCCL)
# with DataLoader workers; the paper's full-size architecture (all 4096 detector pixels) on the GPU;
# (general) the general model's GPU stage: a collection across optics simulated on the GPU, training resumed;
# (longtrain) a larger collection simulated on the GPU and the CPUs at once, and two models trained on it
# from memory side by side, each then run on Table 1 (SIM_GPU_COUNT, SIM_CPU_COUNT, TRAIN_SECONDS).
set -u
OUTDIR=${1:-gpu_check_out}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1 CUPY_PYLOPS=0 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
FD="python3 -m flowtie_dask.cli.main"
W=$(mktemp -d)
exec > >(tee "$OUTDIR/gpu_check.log") 2>&1

step() {  # step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit} s) $(date +%T)"
    local t0=$SECONDS
    timeout "$limit" "$@"
    echo "=== $name: exit $? after $((SECONDS - t0)) s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, cupy, numpy, dask, zarr; print('torch', torch.__version__, 'cupy', cupy.__version__, \
'numpy', numpy.__version__, 'dask', dask.__version__, 'zarr', zarr.__version__, torch.cuda.get_device_name())"

tests() {
    step tests 150 python3 -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py tests/test_backend.py \
        tests/simulate/test_series.py tests/baselines/test_gd.py tests/model/test_training.py tests/test_cluster.py \
        tests/test_methods_contract.py \
        ${PYTEST_K:+-k "$PYTEST_K"}
}

table1() {
    step table1-gpu 260 python3 benchmarks/reconstruct_table1.py --device gpu --methods tie flowtie icom gd gd-dense \
        --out "$W/t1"
    step table1-gpu-d4 120 python3 benchmarks/reconstruct_table1.py --device gpu --methods flowtie --symmetry d4 \
        --out "$W/t1"
    cp "$W"/t1/fig3_GaAs_1cells.png "$OUTDIR"/ 2>/dev/null
}

cli() {
    step cli-gpus 120 bash -c "$FD simulate GaAs --lateral-cells 2 --thickness-cells 5 --scan-pixels 64 \
        --detector-pixels 64 --gpus 1 --no-progress --out $W/cli.zarr && \
        $FD reconstruct $W/cli.zarr --method flowtie --gpus 1 --no-progress --out $W/cli_flowtie.zarr && \
        $FD evaluate $W/cli_flowtie.zarr --truth $W/cli.zarr"
}

throughput() {
    step throughput-gpu 150 python3 benchmarks/reconstruct_throughput.py --repeat "${THROUGHPUT_REPEAT:-4}" --gpus 1 \
        --threads ${THROUGHPUT_THREADS:-1} --out "$W/thr"
}

collection() {
    step collection-gpu 150 $FD simulate random-cubic --count 24 --seed 100 --lateral-size 11.5 \
        --thickness-cells-range 1 5 --scan-pixels 64 --detector-pixels 64 --gpus 1 --no-progress --out "$W/train"
}

ddp() {
    step ddp-train 120 python3 -m torch.distributed.run --nproc-per-node 1 -m flowtie_dask.cli.main train \
        "$W/train" --out "$W/ddp.pt" --device cuda --ddp --loader-workers 12 --epochs 2 --steps-per-epoch 100 \
        --batch-size 8 --lr 1e-3 --no-progress
}

paper() {
    step paper-arch-gpu 90 $FD train "$W/train" --out "$W/paper.pt" --architecture paper --n-q 0 --device cuda \
        --loader-workers 12 --epochs 1 --steps-per-epoch 30 --batch-size 4 --no-progress
}

finetune() {  # continue the shipped model on the GPU collection, then Table 1 with it
    cp flowtie_dask/model/pretrained/paper-64.pt "$W/finetuned.pt"
    step finetune-gpu "${FINETUNE_SECONDS:-100}" $FD train "$W/train" --out "$W/finetuned.pt" --resume --epochs 60 \
        --steps-per-epoch 100 --batch-size 8 --lr 1e-3 --tile 16 --n-q 256 --device cuda --loader-workers 12 \
        --no-progress
    cp "$W/finetuned.pt" "$OUTDIR"/
    step table1-finetuned 120 python3 benchmarks/reconstruct_table1.py --device gpu --methods flowtie \
        --model "$W/finetuned.pt" --out "$W/t1ft"
}

longtrain() {  # a larger training set (GPU and CPU simulation side by side), two models trained side by side
    local n_gpu=${SIM_GPU_COUNT:-40} n_cpu=${SIM_CPU_COUNT:-40} secs=${TRAIN_SECONDS:-240}
    local sim="--lateral-size 11.5 --thickness-cells-range 1 5 --scan-pixels 64 --detector-pixels 64 --no-progress"
    step collection-gpu+cpu 220 bash -c "$FD simulate random-cubic --count $n_gpu --seed 100 $sim --gpus 1 \
        --out $W/simg > $W/simg.log 2>&1 & $FD simulate random-cubic --count $n_cpu --seed $((100 + n_gpu)) $sim \
        --workers ${SIM_CPU_WORKERS:-10} --threads 1 --out $W/simc > $W/simc.log 2>&1; wait; tail -n 2 $W/sim?.log"
    cp flowtie_dask/model/pretrained/paper-64.pt "$W/A.pt"
    local common="--in-memory --loader-workers 6 --device cuda --tile 16 --n-q 256 --lr-schedule cosine \
        --time-limit $secs --epochs 100000 --steps-per-epoch 100 --no-progress"
    # A: the shipped model continued; B: a deeper, wider shared model from scratch
    step train-A+B $((secs + 90)) bash -c "$FD train $W/simg $W/simc --out $W/A.pt --resume --batch-size 8 \
        --lr 1e-3 $common > $OUTDIR/train_A.log 2>&1 & $FD train $W/simg $W/simc --out $W/B.pt --hidden 48 \
        --depth 6 --batch-size 16 --lr 2e-3 $common > $OUTDIR/train_B.log 2>&1; wait; tail -n 4 $OUTDIR/train_?.log"
    cp "$W/A.pt" "$W/B.pt" "$OUTDIR"/
    [ "${LONGTRAIN_TABLE1:-1}" = 1 ] || return 0
    step table1-A 120 python3 benchmarks/reconstruct_table1.py --device gpu --methods flowtie --model "$W/A.pt" \
        --out "$W/t1A"
    mkdir -p "$W/t1B" && cp -r "$W"/t1A/*cells.zarr "$W/t1B"/
    step table1-B 120 python3 benchmarks/reconstruct_table1.py --device gpu --methods flowtie --model "$W/B.pt" \
        --out "$W/t1B"
}

general() {  # the GPU stage of the general model: a collection across optics simulated on the GPU, training resumed
    local secs=${TRAIN_SECONDS:-240}
    step collection-optics-gpu 220 $FD simulate random-crystal --count ${SIM_GPU_COUNT:-200} --seed 3000 \
        --optics-range default --gpus 1 --no-progress --out "$W/optics"
    cp flowtie_dask/model/pretrained/general.pt "$W/general.pt"
    step train-general-gpu $((secs + 90)) $FD train "$W/optics" --out "$W/general.pt" --resume --batch-size 16 \
        --lr 5e-4 --lr-schedule cosine --time-limit $secs --epochs 100000 --steps-per-epoch 100 --tile 16 --n-q 256 \
        --dose-range 1e3 1e6 --in-memory --loader-workers 6 --device cuda --no-progress
    cp "$W/general.pt" "$OUTDIR"/
    step optics-general-gpu 200 python3 benchmarks/flowtie_optics.py --methods tie flowtie --model "$W/general.pt" \
        --device gpu --out "$W/optics_eval"
}

for s in ${STEPS:-tests table1 cli throughput collection ddp paper general}; do
    $s
done
echo "=== done $(date +%T)"
