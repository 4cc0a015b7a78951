#!/usr/bin/env bash
# Issue 7.6 on a lent GPU: `python -m scaling.bench` on a GPT of ~124M parameters at context 1024,
# bf16 compute with fp32 master weights, attention_impl=auto (cuDNN flash attention on GPU).
#
# The GPU image has JAX, Flax, Optax and Orbax but not Hydra, so Hydra travels as wheels:
#   here, once:        bash benchmarks/gpu_bench.sh --fetch-wheels      (writes .whl/, git-ignored)
#   on the GPU machine (device tool): run(command="bash benchmarks/gpu_bench.sh", carry=[".whl"])
# Each batch size prints the bench's JSON line (tokens_per_s, mfu against the datasheet bf16 peak,
# attention_impl, compute_dtype); everything also goes to $OUT/gpu_bench.log when $OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(hydra-core==1.3.2 omegaconf==2.3.0)
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
  SHAPE=(model.d_model=768 model.n_layers=12 model.n_heads=12 model.seq_len=1024 data.vocab_size=50304)
  for batch in ${GPU_BENCH_BATCHES:-8 16 32}; do
    python3 -m scaling.bench "${SHAPE[@]}" train.batch_size="$batch" bench.steps="${GPU_BENCH_STEPS:-20}" \
      bench.warmup=5 compilation_cache=false "$@"
  done
} 2>&1 | tee "$log"
