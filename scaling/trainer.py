"""Training one run: the step loop, checkpoints on a schedule, preemption, divergence, and the run directory.

Flow: config -> plan (scaling/plan.py) -> corpus and data order -> model and optimiser -> jitted
step loop (scaling/step.py) with checkpoints -> run directory (config.yaml, metrics, summary.json).
`train(cfg)` checks everything before writing anything, then trains, resumes, or skips a finished
run (scaling/relaunch.py), holding the run's lock; entry points call it (scaling/cli.py). A run whose
loss blows up stops as `diverged` (scaling/divergence.py); a full disk is one line (scaling/diskspace.py).
"""

from __future__ import annotations

import math
import signal
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from tqdm import tqdm

from scaling import checkpoint, contract, diskspace, rundir
from scaling.attention import resolve_attention_impl
from scaling.config import RunConfig, replace
from scaling.data.corpus import Corpus
from scaling.data.load import load_corpus
from scaling.data.order import (
    DataOrder,
    eval_set,
    n_sequences,
    run_order,
    sequences,
    warn_if_repeats,
)
from scaling.divergence import DivergenceMonitor
from scaling.errors import ConfigError
from scaling.mesh import (
    BATCH_AXES,
    batch_sharding,
    global_batch,
    initialize_distributed,
    is_writer,
    make_mesh,
    tree_shardings,
)
from scaling.model import build_model
from scaling.mup import optimizer_multipliers
from scaling.optimizer import make_optimizer, optimizer_factory
from scaling.plan import Plan, make_plan
from scaling.provenance import environment
from scaling.relaunch import check_stored, exclusive, prepare_run_dir, resolved_config
from scaling.schedule import learning_rate, schedule_values
from scaling.step import eval_chunks, make_eval, make_train_step
from scaling.validate import validate_config, validate_plan


class Preemption:
    """SIGTERM (sent by SLURM/submitit before preemption) asks the loop to checkpoint and stop."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self):
        signal.signal(signal.SIGTERM, self._previous)


def with_run_order(cfg: RunConfig, run_dir: Path) -> RunConfig:
    """cfg with data.order set: as asked, else the order the run in `run_dir` started with (a new branch:
    that of the run it starts from, whose data stream it continues), else the newest."""
    stored = None if cfg.overwrite else rundir.read_config(run_dir)
    if stored is None and cfg.train.init_from is not None:
        stored = rundir.read_config(Path(cfg.train.init_from))
    return replace(cfg, data={"order": run_order(cfg.data.order, rundir.recorded_order(stored))})


class Trainer:
    """The step loop and its bookkeeping; `run` returns the summary dict."""

    def __init__(self, cfg: RunConfig, plan: Plan, corpus: Corpus, run_dir: Path):
        self.cfg, self.plan, self.corpus, self.run_dir = cfg, plan, corpus, run_dir
        model = build_model(plan.model, plan.vocab_size, cfg.train.seed)
        self.graphdef, params = nnx.split(model, nnx.Param)
        self.mesh = make_mesh(cfg.mesh)
        host_params = jax.device_get(nnx.to_pure_dict(params))  # same values on every process
        self.params = jax.device_put(host_params, tree_shardings(host_params, self.mesh))
        multipliers = optimizer_multipliers(host_params, plan.model)
        self.tx = make_optimizer(cfg.train, plan.steps, multipliers)
        # Initialised inside jit with explicit layouts, so every process builds the same global arrays.
        opt_shardings = tree_shardings(jax.eval_shape(self.tx.init, self.params), self.mesh)
        self.opt_state = jax.jit(self.tx.init, out_shardings=opt_shardings)(self.params)
        replicated = NamedSharding(self.mesh, PartitionSpec())
        state_shardings = jax.tree.map(lambda x: x.sharding, (self.params, self.opt_state))
        self.batch_sharding = batch_sharding(self.mesh)
        optimizer = optimizer_factory(cfg.train, multipliers)
        step_fn = make_train_step(self.graphdef, optimizer, plan.grad_accum, (*state_shardings, replicated))
        self.schedule = jax.device_put(schedule_values(cfg.train, plan.steps), replicated)
        # Compiled ahead of the loop so compile time is measured apart (and the persistent cache's saving seen).
        batch_shape = jax.ShapeDtypeStruct((cfg.train.batch_size, plan.model.seq_len + 1), jnp.int32, sharding=self.batch_sharding)
        t0 = time.perf_counter()
        self.step_fn = step_fn.lower(self.params, self.opt_state, batch_shape, self.schedule).compile()
        self.compile_s = time.perf_counter() - t0
        seq_len = plan.model.seq_len
        self.order = DataOrder(
            seed=cfg.train.data_seed if cfg.train.data_seed is not None else cfg.train.seed,
            batch_size=cfg.train.batch_size,
            n_seqs=n_sequences(len(corpus.train), seq_len),
            kind=cfg.data.order,
        )
        chunks = eval_chunks(eval_set(corpus.val, seq_len, cfg.data.eval_tokens), cfg.train.batch_size)
        self.eval_chunks = global_batch(chunks, NamedSharding(self.mesh, PartitionSpec(None, BATCH_AXES)))
        self.evaluate = make_eval(self.graphdef, plan.grad_accum if chunks.shape[1] % plan.grad_accum == 0 else 1)
        self.mngr = checkpoint.manager(run_dir, cfg.checkpoint)
        self.checkpoint_bytes = checkpoint.size_estimate(plan.params.total)
        self.monitor = DivergenceMonitor(plan.vocab_size)
        self.rows: list[dict] = []
        self.step, self.wall_before = 0, 0.0

    def batch(self, step: int) -> np.ndarray:
        return sequences(self.corpus.train, self.order.indices(step), self.plan.model.seq_len)

    def resume(self) -> None:
        """Continue from this run's newest good checkpoint, else from `train.init_from` if given."""
        abstract = {"params": self.params, "opt_state": self.opt_state}
        restored = checkpoint.restore_latest(self.mngr, abstract)
        source = self.run_dir
        if restored is None and self.cfg.train.init_from is not None:
            source = Path(self.cfg.train.init_from)
            try:
                restored = checkpoint.restore_step(source, self.cfg.train.init_step, abstract)
            except checkpoint.DamagedCheckpoint as err:
                raise ConfigError("train.init_from", f"{err} in {source}",
                                  "relaunch that run (it saves the step anew) or start from another step") from err
        if restored is None:
            return
        self.params, self.opt_state = restored["params"], restored["opt_state"]
        self.step, self.wall_before = restored["record"]["step"], restored["record"].get("wall_s", 0.0)
        self.rows = rundir.read_metrics(source, self.step).to_dict("records")
        for row in self.rows:  # the divergence rule's state is a function of the losses logged so far
            if not math.isnan(row["train_loss"]):
                self.monitor.add(row["step"], row["train_loss"])
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
        self.require_space()
        checkpoint.save(self.mngr, step, self.params, self.opt_state, record)
        if is_writer():
            rundir.write_metrics(self.run_dir, self.rows)
        self.last_log = (step, time.perf_counter())  # evaluation time is not training throughput
        return eval_loss

    def save_for_preemption(self, step: int, wall_s: float) -> None:
        """A step off the schedule: no evaluation (it would add a row an uninterrupted run lacks,
        and the grace period before SIGKILL is short); removed once the run completes."""
        record = {"tokens": step * self.plan.tokens_per_step, "wall_s": wall_s, "preemption": True}
        self.require_space()
        checkpoint.save(self.mngr, step, self.params, self.opt_state, record)

    def require_space(self) -> None:
        """DiskFull, in one line, before a checkpoint that cannot fit (with room for a save still in
        flight). One process only: in a multi-process job the processes could read different free
        space and disagree, so there a full disk is reported when the save itself fails."""
        if jax.process_count() == 1:
            in_flight = 2 if self.mngr.is_saving_in_progress() else 1
            diskspace.require_free(self.run_dir / contract.CHECKPOINT_DIR, in_flight * self.checkpoint_bytes)

    def run(self, runtime: dict[str, Any]) -> dict:
        cfg, plan = self.cfg, self.plan
        t0 = time.perf_counter()
        wall = lambda: self.wall_before + time.perf_counter() - t0  # noqa: E731
        self.last_log = (self.step, t0)
        if self.step == 0 and checkpoint.should_save(cfg.checkpoint, 0, plan.steps):
            self.save(0, 0.0)
        status, pending = contract.COMPLETED, None
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
                    status = contract.DIVERGED
                    break
                pending = (done, metrics["loss"]) if done % cfg.train.log_every == 0 or done == plan.steps else None
                on_schedule = checkpoint.should_save(cfg.checkpoint, done, plan.steps)
                if on_schedule or preemption.requested:
                    if pending is not None and not self._log(*pending, bar, wall()):
                        status = contract.DIVERGED
                        break
                    pending = None
                    if on_schedule:
                        bar.set_postfix(eval=f"{self.save(done, wall()):.3f}", refresh=False)
                    else:
                        self.save_for_preemption(done, wall())
                self.step = done
                bar.update(1)
                if preemption.requested:
                    status = contract.PREEMPTED
                    break
            if status == contract.COMPLETED and pending is not None and not self._log(*pending, bar, wall()):
                status = contract.DIVERGED
            if status == contract.COMPLETED and self.monitor.finish() is not None:
                status = contract.DIVERGED
            if status == contract.COMPLETED:  # the folder then matches an uninterrupted run's
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
        return self.summary(status, wall(), runtime)

    def _log(self, step: int, loss_array: jax.Array, bar, wall_s: float) -> bool:
        """Record a train loss; False once the run has diverged (scaling/divergence.py)."""
        loss, now = float(loss_array), time.perf_counter()
        tokens_per_s = (step - self.last_log[0]) * self.plan.tokens_per_step / max(now - self.last_log[1], 1e-9)
        self.last_log = (step, now)
        self.rows.append(self.row(step, train_loss=loss, tokens_per_s=tokens_per_s, wall_s=wall_s))
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
        return self.monitor.add(step, loss) is None

    def summary(self, status: str, wall_s: float, runtime: dict[str, Any]) -> dict:
        df = rundir.metrics_frame(self.rows)
        train = df.dropna(subset=["train_loss"])
        evals = df.dropna(subset=["eval_loss"])
        plan, meta = self.plan, self.corpus.meta
        diverged = self.monitor.verdict
        return {
            "status": status,
            **({contract.DIVERGED_STEP: diverged.step, contract.DIVERGED_REASON: diverged.reason} if diverged else {}),
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
            contract.PARAMS_DIGEST: checkpoint.params_digest(self.params),
            contract.CORPUS_HASH: meta.get(contract.CORPUS_HASH),
            contract.TOKENIZER_HASH: meta.get(contract.TOKENIZER_HASH),
            "attention_impl": resolve_attention_impl(plan.model),
            **environment(),
            "runtime": runtime,
        }


def train(cfg: RunConfig, runtime: dict[str, Any] | None = None) -> dict:
    """Train (or resume, or skip if finished) the run described by `cfg`; returns its summary.

    Everything that can refuse the launch runs before anything is written; training happens under
    the run's lock (RunBusy if another process holds it). `runtime` is what the entry point's
    `runtime.initialize` set up, recorded in the summary."""
    validate_config(cfg)
    initialize_distributed(cfg.mesh)
    run_dir = Path(cfg.run_dir)
    rundir.check_writable(run_dir)
    cfg = with_run_order(cfg, run_dir)  # a resumed run keeps its data order
    corpus = load_corpus(cfg.data, progress=cfg.progress)
    plan = make_plan(cfg, corpus.vocab_size)
    validate_plan(cfg, plan, corpus)
    resolved = resolved_config(cfg, plan, corpus)
    done = check_stored(cfg, run_dir, resolved)
    if done is None:
        with diskspace.reported(run_dir, checkpoint.size_estimate(plan.params.total)), exclusive(run_dir):
            done = prepare_run_dir(cfg, run_dir, resolved)
            if done is None:
                return _train_here(cfg, plan, corpus, run_dir, runtime or {})
    print(f"{run_dir}: already {done['status']} ({done['steps']} steps); nothing to do", file=sys.stderr)
    return done


def _train_here(cfg: RunConfig, plan: Plan, corpus: Corpus, run_dir: Path, runtime: dict[str, Any]) -> dict:
    trainer = Trainer(cfg, plan, corpus, run_dir)
    warning = warn_if_repeats(plan.steps, trainer.order)
    if warning:
        warnings.warn(warning)
    trainer.resume()
    summary = trainer.run(runtime)
    if is_writer():
        rundir.write_summary(run_dir, summary)
        print(_one_line(summary), file=sys.stderr)
    return summary


def _one_line(s: dict) -> str:
    where = f" at step {s[contract.DIVERGED_STEP]} ({s[contract.DIVERGED_REASON]})" if contract.DIVERGED_STEP in s else ""
    return (
        f"{s['status']}{where}: N={s['params_total']:,} D={s['tokens_trained']:,} "
        f"eval_loss={s['final_eval_loss']:.4f} in {s['wall_s']:.1f}s -> {s['run_dir']}"
    )
