#!/usr/bin/env bash
# On a lent GPU (issues 7.6 and 24.4), two measurements, one command:
#  1. `python -m scaling.bench` on a GPT of ~124M parameters at context 1024, bf16 compute with fp32
#     master weights, cuDNN flash attention: tokens/s and MFU against the datasheet bf16 peak, per batch.
#  2. The CPU demo's 78k-parameter rung (d_model 40, 3 layers, heads of 4 channels, context 64, batch 16,
#     muP) alone and `bench.pack=8` (8 runs in one vmapped program, as hydra/launcher=local packs them on
#     an accelerator): their aggregate tokens/s against one run's. XLA attention there: cuDNN's flash
#     attention does not take heads of 4 channels.
#
# The GPU image has JAX, Flax, Optax and Orbax but not Hydra, so Hydra travels as wheels:
#   here, once:        bash benchmarks/gpu_bench.sh --fetch-wheels      (writes .whl/, git-ignored)
#   on the GPU machine (device tool): run(command="bash benchmarks/gpu_bench.sh", carry=[".whl"])
# Each batch size prints the bench's JSON line (tokens_per_s, mfu against the datasheet bf16 peak,
# attention_impl, compute_dtype); everything also goes to $OUT/gpu_bench.log when $OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(hydra-core==1.3.2 omegaconf==2.3.0 cloudpickle==3.1.1)
if [[ "${1:-}" == "--fetch-wheels" ]]; then
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${WHEELS[@]}"
  python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3  # published as a source archive only
  ls .whl
  exit 0
fi

if [[ -d .whl ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
log="${OUT:-/tmp}/gpu_bench.log"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
  SHAPE=(model.d_model=768 model.n_layers=12 model.n_heads=12 model.seq_len=1024 data.vocab_size=50304
    model.compute_dtype=bfloat16 model.attention_impl=cudnn)
  for batch in ${GPU_BENCH_BATCHES:-8 16 32}; do
    python3 -m scaling.bench "${SHAPE[@]}" train.batch_size="$batch" bench.steps="${GPU_BENCH_STEPS:-20}" \
      bench.warmup=5 compilation_cache=false "$@"
  done
  RUNG=(model.d_model=40 model.n_layers=3 model.n_heads=10 model.seq_len=64 data.vocab_size=512
    train.batch_size=16 model.parametrization=mup model.base_width=32 model.attention_impl=xla)
  python3 -m scaling.bench "${RUNG[@]}" bench.steps="${GPU_BENCH_STEPS:-50}" bench.warmup=5 bench.pack=8 \
    compilation_cache=false "$@"
} 2>&1 | tee "$log"
