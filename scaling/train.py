"""`python -m scaling.train`: train one decoder-only LM for a size and a token budget.

Flow: config -> plan (sizing, budget, steps) -> corpus and data order -> model and optimiser ->
jitted step loop with checkpoints on a schedule -> run directory (config, metrics, summary).
With `--multirun sweep=NAME` Hydra runs one such job per grid point (see sweeps/).
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from tqdm import tqdm

from scaling import checkpoint, data, rundir, sweep
from scaling.config import ModelConfig, RunConfig, to_dataclass
from scaling.corpus import Corpus, load_corpus
from scaling.errors import ConfigError, exit_with
from scaling.isoflop import GridPoint, grid_point
from scaling.mesh import BATCH_AXES, batch_sharding, global_batch, initialize_distributed, is_writer, make_mesh, tree_shardings
from scaling.model import build_model, resolve_attention_impl, token_losses
from scaling.optimizer import learning_rate, make_optimizer, optimizer_factory, schedule_values
from scaling.provenance import environment, enable_compilation_cache
from scaling.sizing import ParamCount, flops_per_token, param_count, shape_for_params
from scaling.validate import validate_config, validate_plan, validated_entry


@dataclass(frozen=True)
class Plan:
    """Numbers derived from the config before anything trains; written to config.yaml."""

    model: ModelConfig
    vocab_size: int
    params: ParamCount
    flops_per_token: dict[str, float]
    tokens_per_step: int
    steps: int
    tokens: int
    grad_accum: int  # micro-batches per step, as resolved for this machine (`micro_batches`)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_shape": {k: getattr(self.model, k) for k in ("d_model", "n_layers", "n_heads", "seq_len")},
            "vocab_size": self.vocab_size,
            "params_total": self.params.total,
            "params_embedding": self.params.embedding,
            "params_nonembedding": self.params.nonembedding,
            "flops_per_token": self.flops_per_token,
            "tokens_per_step": self.tokens_per_step,
            "steps": self.steps,
            "tokens": self.tokens,
            "grad_accum": self.grad_accum,
        }


def make_plan(cfg: RunConfig, vocab_size: int) -> Plan:
    """Resolve the model shape (from n_params if given) and the budget (from flops if given)."""
    model = cfg.model
    if cfg.sweep.point is not None:
        model = isoflop_model(cfg, vocab_size)
    elif model.n_params is not None:
        model = shape_for_params(model, vocab_size, model.n_params)
    params = param_count(model, vocab_size)
    per_token = flops_per_token(model, vocab_size)
    tokens_per_step = cfg.train.batch_size * model.seq_len
    target = cfg.train.tokens if cfg.train.tokens is not None else cfg.train.flops / per_token["6n"]
    steps = int(target // tokens_per_step)
    accum = micro_batches(cfg.train.grad_accum, cfg.train.batch_size, model, jax.device_count(), jax.default_backend())
    return Plan(model, vocab_size, params, per_token, tokens_per_step, steps, steps * tokens_per_step, accum)


# On CPU a step over the whole batch streams its activations and logits through main memory;
# micro-batches of about this many tokens per device stay in cache. Measured in-process (see
# benchmarks/RESULTS.md, #10): -21% per step at d_model 256 / context 256 / batch 16 (8 micro-batches)
# and -17% at d_model 512 / context 512 / batch 8; 256-token micro-batches were no better.
CPU_MICRO_BATCH_TOKENS = 512
# Below this width each micro-batch is too little work to pay for another pass through the model
# (d_model 32: 5.0 -> 5.7 ms per step when split in two).
CPU_MICRO_BATCH_MIN_WIDTH = 64


def micro_batches(requested: int | None, batch_size: int, model: ModelConfig, n_devices: int, backend: str) -> int:
    """`train.grad_accum` when given; otherwise 1 on accelerators, and on CPU the most micro-batches
    that keep each at least CPU_MICRO_BATCH_TOKENS tokens per device (and the batch split evenly)."""
    if requested is not None:
        return requested
    if backend != "cpu" or model.d_model < CPU_MICRO_BATCH_MIN_WIDTH or batch_size % n_devices:
        return 1
    per_device = batch_size // n_devices
    fits = [a for a in range(1, per_device + 1) if per_device % a == 0 and per_device // a * model.seq_len >= CPU_MICRO_BATCH_TOKENS]
    return max(fits, default=1)


def isoflop_point(cfg: RunConfig, vocab_size: int, max_tokens: int | None = None) -> GridPoint:
    """The IsoFLOP grid point (train.flops, sweep.point) names."""
    if cfg.train.flops is None:
        raise ConfigError("sweep.point", "an IsoFLOP point needs a compute budget", "set train.flops")
    tokens_per_step = cfg.train.batch_size * cfg.model.seq_len
    return grid_point(
        cfg.train.flops, cfg.sweep.point, cfg.model, vocab_size, tokens_per_step,
        spacing=cfg.sweep.spacing, tokens_per_param=cfg.sweep.tokens_per_param, max_tokens=max_tokens,
    )  # fmt: skip


def isoflop_model(cfg: RunConfig, vocab_size: int) -> ModelConfig:
    d_model, n_layers, n_heads = isoflop_point(cfg, vocab_size).shape
    return dataclasses.replace(cfg.model, d_model=d_model, n_layers=n_layers, n_heads=n_heads, n_params=None)


def loss_fn(graphdef: nnx.GraphDef, params: Any, seqs_BxT1: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, params)
    logits_BxTxV = model(seqs_BxT1[:, :-1])
    return token_losses(logits_BxTxV, seqs_BxT1[:, 1:]).mean()


def micro_split(seqs_BxT1: jax.Array, n: int) -> jax.Array:
    """(B, T+1) -> (n, B/n, T+1), micro-batch a taking rows a, a + n, a + 2n, ...: with the batch
    sharded over devices in contiguous blocks, every micro-batch then spans all devices."""
    return seqs_BxT1.reshape(-1, n, seqs_BxT1.shape[-1]).swapaxes(0, 1)


def make_train_step(
    graphdef: nnx.GraphDef,
    optimizer: Callable[[jax.Array], optax.GradientTransformation],
    grad_accum: int,
    out_shardings=None,
):
    """One optimiser step, jitted whole, with gradient accumulation inside jit and donated state.

    The step is `step(params, opt_state, seqs, schedule)`: `optimizer(schedule)` builds the optimiser
    inside jit from `optimizer.schedule_values(...)`, an array argument, so runs that differ only in
    budget or lr compile to one program (and one persistent-cache entry). `out_shardings` (params,
    opt_state, metrics) pins the state's layout on a device mesh, so the donated buffers are reused
    step after step instead of being re-laid out."""
    grad_fn = jax.value_and_grad(lambda p, s: loss_fn(graphdef, p, s))

    def accumulate(params, seqs_BxT1):
        if grad_accum == 1:
            return grad_fn(params, seqs_BxT1)
        micro_AxMxT1 = micro_split(seqs_BxT1, grad_accum)

        def body(carry, micro_MxT1):
            loss, grads = grad_fn(params, micro_MxT1)
            return jax.tree.map(jnp.add, carry, (loss, grads)), None

        zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
        total, _ = jax.lax.scan(body, zero, micro_AxMxT1)
        return jax.tree.map(lambda x: x / grad_accum, total)

    def step(params, opt_state, seqs_BxT1, schedule):
        loss, grads = accumulate(params, seqs_BxT1)
        updates, opt_state = optimizer(schedule).update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    if out_shardings is None:
        return jax.jit(step, donate_argnums=(0, 1))
    return jax.jit(step, donate_argnums=(0, 1), out_shardings=out_shardings)


def eval_chunks(eval_NxT1: np.ndarray, batch_size: int) -> np.ndarray:
    """The held-out windows as (chunks, batch, T+1), dropping the remainder of the last chunk."""
    chunk = min(batch_size, len(eval_NxT1))
    n = len(eval_NxT1) // chunk * chunk
    return eval_NxT1[:n].reshape(-1, chunk, eval_NxT1.shape[-1])


def make_eval(graphdef: nnx.GraphDef, micro: int = 1):
    """Mean loss over the fixed held-out chunks; one host sync per evaluation. Each chunk goes
    through the model in `micro` equal pieces, split as the train step splits its batch (the same
    windows whatever the split, so evaluations compare across machines)."""

    @jax.jit
    def evaluate(params, chunks_CxBxT1):
        c, b, t1 = chunks_CxBxT1.shape
        pieces = jax.vmap(lambda chunk: micro_split(chunk, micro))(chunks_CxBxT1).reshape(c * micro, b // micro, t1)
        per_piece = jax.lax.map(lambda s: loss_fn(graphdef, params, s), pieces)
        return per_piece.mean()

    return evaluate


class Preemption:
    """SIGTERM (sent by SLURM/submitit before preemption) asks the loop to checkpoint and stop."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self):
        signal.signal(signal.SIGTERM, self._previous)


def resolved_config(cfg: RunConfig, plan: Plan, corpus: Corpus) -> dict[str, Any]:
    return {"config": dataclasses.asdict(cfg), "derived": plan.as_dict(), "data": corpus.meta}


def prepare_run_dir(cfg: RunConfig, run_dir: Path, resolved: dict) -> dict | None:
    """Returns the stored summary of a completed run (nothing to do), else readies the folder."""
    stored = rundir.read_config(run_dir)
    if stored is not None and not cfg.overwrite:
        differing = rundir.config_differences(stored, resolved)
        if differing:
            raise ConfigError(
                ", ".join(differing[:6]),
                f"differs from the configuration stored in {run_dir}",
                "use the stored values, another run_dir, or overwrite=true",
            )
        summary = rundir.read_json(run_dir / rundir.SUMMARY_FILE)
        if summary and summary.get("status") == "completed":
            return summary
        before, now = stored.get("derived", {}).get("grad_accum"), resolved["derived"]["grad_accum"]
        if before is not None and before != now:
            warnings.warn(
                f"{run_dir} was trained with {before} micro-batches per step and goes on with {now} (the backend or "
                "device count changed): it continues to float tolerance, not bit for bit"
            )
    if is_writer():
        if stored is not None and cfg.overwrite:
            rundir.clear(run_dir)
        rundir.write_config(run_dir, resolved)
    return None


class Trainer:
    """The step loop and its bookkeeping; `run` returns the summary dict."""

    def __init__(self, cfg: RunConfig, plan: Plan, corpus: Corpus, run_dir: Path):
        self.cfg, self.plan, self.corpus, self.run_dir = cfg, plan, corpus, run_dir
        model = build_model(plan.model, plan.vocab_size, cfg.train.seed)
        self.graphdef, params = nnx.split(model, nnx.Param)
        self.mesh = make_mesh(cfg.mesh)
        host_params = jax.device_get(nnx.to_pure_dict(params))  # same values on every process
        self.params = jax.device_put(host_params, tree_shardings(host_params, self.mesh))
        self.tx = make_optimizer(cfg.train, plan.steps)
        # Initialised inside jit with explicit layouts, so every process builds the same global arrays.
        opt_shardings = tree_shardings(jax.eval_shape(self.tx.init, self.params), self.mesh)
        self.opt_state = jax.jit(self.tx.init, out_shardings=opt_shardings)(self.params)
        replicated = NamedSharding(self.mesh, PartitionSpec())
        state_shardings = jax.tree.map(lambda x: x.sharding, (self.params, self.opt_state))
        self.batch_sharding = batch_sharding(self.mesh)
        step_fn = make_train_step(self.graphdef, optimizer_factory(cfg.train), plan.grad_accum, (*state_shardings, replicated))
        self.schedule = jax.device_put(schedule_values(cfg.train, plan.steps), replicated)
        # Compiled ahead of the loop so compile time is measured apart (and the persistent cache's saving seen).
        batch_shape = jax.ShapeDtypeStruct((cfg.train.batch_size, plan.model.seq_len + 1), jnp.int32, sharding=self.batch_sharding)
        t0 = time.perf_counter()
        self.step_fn = step_fn.lower(self.params, self.opt_state, batch_shape, self.schedule).compile()
        self.compile_s = time.perf_counter() - t0
        seq_len = plan.model.seq_len
        self.order = data.DataOrder(
            seed=cfg.train.data_seed if cfg.train.data_seed is not None else cfg.train.seed,
            batch_size=cfg.train.batch_size,
            n_seqs=data.n_sequences(len(corpus.train), seq_len),
        )
        chunks = eval_chunks(data.eval_set(corpus.val, seq_len, cfg.data.eval_tokens), cfg.train.batch_size)
        self.eval_chunks = global_batch(chunks, NamedSharding(self.mesh, PartitionSpec(None, BATCH_AXES)))
        self.evaluate = make_eval(self.graphdef, plan.grad_accum if chunks.shape[1] % plan.grad_accum == 0 else 1)
        self.mngr = checkpoint.manager(run_dir, cfg.checkpoint)
        self.rows: list[dict] = []
        self.step, self.wall_before = 0, 0.0

    def batch(self, step: int) -> np.ndarray:
        return data.sequences(self.corpus.train, self.order.indices(step), self.plan.model.seq_len)

    def resume(self) -> None:
        """Continue from this run's newest good checkpoint, else from `train.init_from` if given."""
        abstract = {"params": self.params, "opt_state": self.opt_state}
        restored = checkpoint.restore_latest(self.mngr, abstract)
        source = self.run_dir
        if restored is None and self.cfg.train.init_from is not None:
            source = Path(self.cfg.train.init_from)
            restored = checkpoint.restore_step(source, self.cfg.train.init_step, abstract)
        if restored is None:
            return
        self.params, self.opt_state = restored["params"], restored["opt_state"]
        self.step, self.wall_before = restored["record"]["step"], restored["record"].get("wall_s", 0.0)
        self.rows = rundir.read_metrics(source, self.step).to_dict("records")
        print(f"resuming {self.run_dir} from step {self.step} of {source}", file=sys.stderr)

    def row(self, step: int, **values) -> dict:
        tokens = step * self.plan.tokens_per_step
        with jax.default_device(jax.local_devices(backend="cpu")[0]):  # on an accelerator it would queue behind the step in flight
            lr = float(learning_rate(self.cfg.train, self.plan.steps, step))
        base = {"step": step, "tokens": tokens, "flops": tokens * self.plan.flops_per_token["6n"], "lr": lr}
        return {**base, "train_loss": math.nan, "eval_loss": math.nan, "tokens_per_s": math.nan, **values}

    def save(self, step: int, wall_s: float) -> float:
        eval_loss = float(self.evaluate(self.params, self.eval_chunks))
        self.rows.append(self.row(step, eval_loss=eval_loss, wall_s=wall_s))
        record = {"tokens": step * self.plan.tokens_per_step, "wall_s": wall_s, "eval_loss": eval_loss}
        checkpoint.save(self.mngr, step, self.params, self.opt_state, record)
        if is_writer():
            rundir.write_metrics(self.run_dir, self.rows)
        self.last_log = (step, time.perf_counter())  # evaluation time is not training throughput
        return eval_loss

    def save_for_preemption(self, step: int, wall_s: float) -> None:
        """A step off the schedule: no evaluation (it would add a row an uninterrupted run lacks,
        and the grace period before SIGKILL is short); removed once the run completes."""
        record = {"tokens": step * self.plan.tokens_per_step, "wall_s": wall_s, "preemption": True}
        checkpoint.save(self.mngr, step, self.params, self.opt_state, record)

    def run(self) -> dict:
        cfg, plan = self.cfg, self.plan
        t0 = time.perf_counter()
        wall = lambda: self.wall_before + time.perf_counter() - t0  # noqa: E731
        self.last_log = (self.step, t0)
        if self.step == 0 and checkpoint.should_save(cfg.checkpoint, 0, plan.steps):
            self.save(0, 0.0)
        status, pending = "completed", None
        preemption = Preemption()
        bar = tqdm(total=plan.steps, initial=self.step, disable=not cfg.progress, unit="step", dynamic_ncols=True)
        prefetch = ThreadPoolExecutor(max_workers=1)
        next_batch = prefetch.submit(self.batch, self.step)
        try:
            for step in range(self.step, plan.steps):
                seqs = global_batch(next_batch.result(), self.batch_sharding)
                if step + 1 < plan.steps:
                    next_batch = prefetch.submit(self.batch, step + 1)
                self.params, self.opt_state, metrics = self.step_fn(self.params, self.opt_state, seqs, self.schedule)
                done = step + 1
                # The previous step's loss is read only now, so the device never idles on the host.
                if pending is not None and not self._log(*pending, bar, wall()):
                    status = "diverged"
                    break
                pending = (done, metrics["loss"]) if done % cfg.train.log_every == 0 or done == plan.steps else None
                on_schedule = checkpoint.should_save(cfg.checkpoint, done, plan.steps)
                if on_schedule or preemption.requested:
                    if pending is not None and not self._log(*pending, bar, wall()):
                        status = "diverged"
                        break
                    pending = None
                    if on_schedule:
                        bar.set_postfix(eval=f"{self.save(done, wall()):.3f}", refresh=False)
                    else:
                        self.save_for_preemption(done, wall())
                self.step = done
                bar.update(1)
                if preemption.requested:
                    status = "preempted"
                    break
            if status == "completed" and pending is not None and not self._log(*pending, bar, wall()):
                status = "diverged"
            if status == "completed":  # the folder then matches an uninterrupted run's
                self.mngr.wait_until_finished()
                checkpoint.drop_off_schedule(self.mngr, cfg.checkpoint, plan.steps)
        finally:
            bar.close()
            prefetch.shutdown(wait=False, cancel_futures=True)
            preemption.restore()
            self.mngr.wait_until_finished()
            self.mngr.close()
        if is_writer():
            rundir.write_metrics(self.run_dir, self.rows)
        return self.summary(status, wall())

    def _log(self, step: int, loss_array: jax.Array, bar, wall_s: float) -> bool:
        """Record a train loss; False when it is not finite (the run has diverged)."""
        loss, now = float(loss_array), time.perf_counter()
        tokens_per_s = (step - self.last_log[0]) * self.plan.tokens_per_step / max(now - self.last_log[1], 1e-9)
        self.last_log = (step, now)
        self.rows.append(self.row(step, train_loss=loss, tokens_per_s=tokens_per_s, wall_s=wall_s))
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
        return math.isfinite(loss)

    def summary(self, status: str, wall_s: float) -> dict:
        df = rundir.metrics_frame(self.rows)
        train = df.dropna(subset=["train_loss"])
        evals = df.dropna(subset=["eval_loss"])
        plan, meta = self.plan, self.corpus.meta
        return {
            "status": status,
            "run_dir": str(self.run_dir),
            **{k: v for k, v in plan.as_dict().items() if k not in ("model_shape", "flops_per_token")},
            **plan.as_dict()["model_shape"],
            "tokens_trained": self.step * plan.tokens_per_step,
            "steps_done": self.step,
            "flops_6n": plan.tokens * plan.flops_per_token["6n"],
            "flops_6n_nonembedding": plan.tokens * plan.flops_per_token["6n_nonembedding"],
            "flops_chinchilla": plan.tokens * plan.flops_per_token["chinchilla"],
            "epochs": self.order.epochs(self.step),
            "final_train_loss": float(train.train_loss.iloc[-1]) if len(train) else math.nan,
            "final_eval_loss": float(evals.eval_loss.iloc[-1]) if len(evals) else math.nan,
            "wall_s": wall_s,
            "compile_s": self.compile_s,
            "params_digest": checkpoint.params_digest(self.params),
            "data_hash": meta.get("corpus_hash"),
            "tokenizer_hash": meta.get("tokenizer_hash"),
            "attention_impl": resolve_attention_impl(plan.model),
            **environment(),
        }


def train(cfg: RunConfig) -> dict:
    """Train (or resume, or skip if complete) the run described by `cfg`; returns its summary."""
    validate_config(cfg)
    initialize_distributed(cfg.mesh)
    run_dir = Path(cfg.run_dir)
    rundir.ensure_writable(run_dir)
    if cfg.compilation_cache:
        enable_compilation_cache()
    corpus = load_corpus(cfg.data, progress=cfg.progress)
    plan = make_plan(cfg, corpus.vocab_size)
    validate_plan(cfg, plan, corpus)
    resolved = resolved_config(cfg, plan, corpus)
    done = prepare_run_dir(cfg, run_dir, resolved)
    if done is not None:
        print(f"{run_dir}: already completed ({done['steps']} steps); nothing to do", file=sys.stderr)
        return done
    trainer = Trainer(cfg, plan, corpus, run_dir)
    warning = data.warn_if_repeats(plan.steps, trainer.order)
    if warning:
        warnings.warn(warning)
    trainer.resume()
    summary = trainer.run()
    if is_writer():
        rundir.write_json(run_dir / rundir.SUMMARY_FILE, summary)
        print(_one_line(summary), file=sys.stderr)
    return summary


def _one_line(s: dict) -> str:
    return (
        f"{s['status']}: N={s['params_total']:,} D={s['tokens_trained']:,} "
        f"eval_loss={s['final_eval_loss']:.4f} in {s['wall_s']:.1f}s -> {s['run_dir']}"
    )


def sweep_job(cfg: RunConfig) -> dict:
    """A multirun job: validate, drop grid points that cannot train, then train in isolation."""
    validate_config(cfg)
    drop_reason = None
    if cfg.sweep.point is not None:
        corpus = load_corpus(cfg.data, progress=cfg.progress)
        drop_reason = isoflop_point(cfg, corpus.vocab_size, max_tokens=len(corpus.train)).dropped
    return sweep.run_job(cfg, drop_reason)


@hydra.main(version_base="1.3", config_path="pkg://sweeps", config_name="config")
def main(node: DictConfig) -> dict | None:
    cfg = to_dataclass(node)
    try:
        if HydraConfig.get().mode == RunMode.MULTIRUN and cfg.sweep.name:
            return sweep_job(cfg)
        return train(cfg)
    except ConfigError as err:
        exit_with(err, debug=cfg.debug)


def cli() -> None:
    validated_entry(main)


if __name__ == "__main__":
    cli()
