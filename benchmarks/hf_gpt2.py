"""Train the same shape with Hugging Face GPT-2 on PyTorch and print its tokens/s beside ours.

    python benchmarks/hf_gpt2.py --d-model 256 --n-layers 4 --n-heads 4 --seq-len 256 \
        --vocab 4096 --batch 16 --steps 10 --repeats 2

Needs the `bench` extra (`pip install -e .[bench]`: torch and transformers). The HF side is a
GPT2LMHeadModel (learned positions, LayerNorm with biases, tanh GELU, tied embeddings, dropout 0)
trained in eager PyTorch, fp32, with AdamW and gradient clipping like ours. Our side is
`python -m scaling.bench` in a subprocess with the same shape; by default our architecture is set
to GPT-2's (`--arch gpt2`), `--arch ours` keeps our defaults (RoPE, RMSNorm, SwiGLU, no biases; GELU before
2026-12-07, as in the results recorded before then).
Our CPU default splits each step into ~512-token micro-batches (scaling.planning.plan.micro_batches);
`--hf-grad-accum` gives HF the same split and `--ours-grad-accum 1` takes it away from ours.
The two run alternately `--repeats` times so that other load on the machine hits both alike;
each side reports the median step time of its runs. Both count B x T tokens per step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GPT2_ARCH = ("model.position=learned", "model.norm=layernorm", "model.use_bias=true", "model.mlp=gelu")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in (
        ("d-model", 256),
        ("n-layers", 4),
        ("n-heads", 4),
        ("seq-len", 256),
        ("vocab", 4096),
        ("batch", 16),
    ):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--steps", type=int, default=10, help="timed steps per run (after --warmup)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=1, help="alternate HF and ours this many times")
    p.add_argument("--attn", default="sdpa", choices=("sdpa", "eager"), help="HF attention implementation")
    p.add_argument("--arch", default="gpt2", choices=("gpt2", "ours"), help="our architecture switches")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    p.add_argument(
        "--hf-grad-accum",
        type=int,
        default=1,
        help="HF side: micro-batches per step (the same cache effect our CPU default uses; 1 = whole batch)",
    )
    p.add_argument(
        "--ours-grad-accum",
        type=int,
        default=None,
        help="our side's train.grad_accum (default: chosen for the machine)",
    )
    return p.parse_args(argv)


def hf_step_times(args: argparse.Namespace) -> list[float]:
    """Seconds per training step of HF GPT-2 (forward, loss, backward, clip, AdamW)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    config = GPT2Config(
        vocab_size=args.vocab,
        n_positions=args.seq_len,
        n_embd=args.d_model,
        n_layer=args.n_layers,
        n_head=args.n_heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
        attn_implementation=args.attn,
    )
    model = GPT2LMHeadModel(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(args.warmup + args.steps):
        tokens_BxT = torch.randint(0, args.vocab, (args.batch, args.seq_len), generator=gen)
        t0 = time.perf_counter()
        for micro_MxT in tokens_BxT.chunk(args.hf_grad_accum):
            loss = model(input_ids=micro_MxT, labels=micro_MxT).loss / args.hf_grad_accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # the host sync that ends the step
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    return times


def ours(args: argparse.Namespace) -> dict:
    """Run `python -m scaling.bench` on the same shape; its last stdout line is the JSON row."""
    overrides = [
        f"model.d_model={args.d_model}",
        f"model.n_layers={args.n_layers}",
        f"model.n_heads={args.n_heads}",
        f"model.seq_len={args.seq_len}",
        f"data.vocab_size={args.vocab}",
        f"train.batch_size={args.batch}",
        f"bench.steps={args.steps}",
        f"bench.warmup={args.warmup}",
        *(GPT2_ARCH if args.arch == "gpt2" else ()),
        *([f"train.grad_accum={args.ours_grad_accum}"] if args.ours_grad_accum else []),
    ]
    result = subprocess.run(
        [sys.executable, "-m", "scaling.bench", *overrides], cwd=REPO, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        sys.exit(f"scaling.bench failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    tokens_per_step = args.batch * args.seq_len
    hf_times, our_rows = [], []
    for i in range(args.repeats):
        hf_times.append(statistics.median(hf_step_times(args)))
        our_rows.append(ours(args))
        print(
            f"run {i + 1}/{args.repeats}: HF {hf_times[-1]:.3f} s/step, ours {our_rows[-1]['step_time_s']:.3f} s/step",
            file=sys.stderr,
        )
    hf_step = statistics.median(hf_times)
    our_step = statistics.median(r["step_time_s"] for r in our_rows)
    row = our_rows[-1]
    result = {
        "shape": {k: getattr(args, k) for k in ("d_model", "n_layers", "n_heads", "seq_len", "vocab", "batch")},
        "hf_tokens_per_s": tokens_per_step / hf_step,
        "ours_tokens_per_s": tokens_per_step / our_step,
        "speedup": hf_step / our_step,
        # Each repeat's HF and ours ran back to back, so their ratio sees the same machine state;
        # on a VM whose speed drifts, the median of these ratios is the steadier number.
        "pairwise_speedups": [h / r["step_time_s"] for h, r in zip(hf_times, our_rows)],
        "hf_step_times_s": hf_times,
        "ours_step_times_s": [r["step_time_s"] for r in our_rows],
        "hf_mfu": tokens_per_step / hf_step * row["flops_per_token"] / row["peak_flops_per_s"]
        if row["peak_flops_per_s"]
        else None,
        "ours_mfu": tokens_per_step / our_step * row["flops_per_token"] / row["peak_flops_per_s"]
        if row["peak_flops_per_s"]
        else None,
        "hf_attention": args.attn,
        "hf_grad_accum": args.hf_grad_accum,
        "ours_grad_accum": row["grad_accum"],
        "ours_arch": args.arch,
        "torch_threads": args.threads,
        "device": row["device"],
        "flops_per_token": row["flops_per_token"],
        "peak_flops_per_s": row["peak_flops_per_s"],
    }
    print(
        f"HF GPT-2 (torch, {args.attn}, {args.hf_grad_accum} micro-batches): {result['hf_tokens_per_s']:,.0f} tokens/s | "
        f"ours (jax, arch={args.arch}, {row['grad_accum']} micro-batches): {result['ours_tokens_per_s']:,.0f} tokens/s | "
        f"ours/HF = {result['speedup']:.2f}x "
        f"(median of per-repeat ratios {statistics.median(result['pairwise_speedups']):.2f}x)"
    )
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
