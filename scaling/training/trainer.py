"""Training one run: the step loop, checkpoints on a schedule, preemption, divergence, and the run directory.

Flow: config -> plan (scaling/planning/plan.py) -> corpus and data order -> model and optimiser -> jitted
step loop (scaling/training/step.py) with checkpoints -> run directory (config.yaml, metrics, summary.json),
written through the run's `RunBook` (scaling/training/runbook.py). `train(cfg)` checks everything before
writing anything, then trains, resumes, or skips a finished run (scaling/training/relaunch.py), holding the
run's lock; entry points call it (scaling/cli.py). A run whose loss blows up stops as `diverged`
(scaling/training/divergence.py); a full disk is one line (scaling/diskspace.py).
"""

from __future__ import annotations

import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from tqdm import tqdm

from scaling import contract, diskspace
from scaling.config import RunConfig, replace
from scaling.data.corpus import Corpus
from scaling.data.eval_set import run_eval_set
from scaling.data.load import load_corpus
from scaling.data.order import run_order, warn_if_repeats
from scaling.model import families
from scaling.model.mup import optimizer_multipliers
from scaling.model.objectives import batch_width
from scaling.planning.plan import Plan, make_plan
from scaling.training import checkpoint, ownership, programs, rundir
from scaling.training.mesh import (
    BATCH_AXES,
    batch_sharding,
    global_batch,
    initialize_distributed,
    is_writer,
    make_mesh,
    tree_shardings,
)
from scaling.training.optimizer import make_optimizer, optimizer_factory
from scaling.training.outcome import already_line, one_line
from scaling.training.relaunch import check_stored, exclusive, prepare_run_dir, resolved_config
from scaling.training.runbook import RunBook
from scaling.training.schedule import schedule_values
from scaling.training.step import make_eval, make_train_step
from scaling.training.validate import validate_config, validate_plan

# SIGTERM: SLURM or submitit preempting the job. SIGUSR2: submitit's warning before the time limit.
# SIGINT: Ctrl-C, which stops a run the same way (a checkpoint, then exit 130); a second Ctrl-C stops at once.
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)


class Preemption:
    """A preemption signal asks the loop to checkpoint and stop. Afterwards, SIGUSR2 goes on to the
    handler that was there before (submitit's, which requeues the job); SIGTERM has done its work."""

    def __init__(self):
        self.signal: int | None = None
        # A signal the process was started ignoring stays ignored (a job started with `&` or nohup ignores Ctrl-C).
        ignored = {sig for sig in PREEMPTION_SIGNALS if signal.getsignal(sig) == signal.SIG_IGN}
        self._previous = {sig: signal.signal(sig, self._handle) for sig in PREEMPTION_SIGNALS if sig not in ignored}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str | None:
        return signal.Signals(self.signal).name if self.signal is not None else None

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.signal == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now (every write is atomic; the last checkpoint stays)
        if signum == signal.SIGINT:
            print("stopping after this step's checkpoint (Ctrl-C again to stop at once)", file=sys.stderr)
        self.signal = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def forward(self) -> None:
        """After the checkpoint: hand a pre-timeout signal to the launcher's own handler (its requeue)."""
        previous = self._previous.get(self.signal)
        if self.signal == signal.SIGUSR2 and callable(previous):
            previous(self.signal, None)


def with_run_order(cfg: RunConfig, run_dir: Path) -> RunConfig:
    """cfg with data.order and data.eval_set set: as asked, else what the run in `run_dir` started with (a
    new branch: what the run it starts from had, whose data stream it continues), else the newest."""
    stored = None if cfg.overwrite else rundir.read_config(run_dir)
    if stored is None and cfg.train.init_from is not None:
        stored = rundir.read_config(Path(cfg.train.init_from))
    return replace(
        cfg,
        data={
            "order": run_order(cfg.data.order, rundir.recorded_order(stored)),
            "eval_set": run_eval_set(cfg.data.eval_set, rundir.recorded_eval_set(stored)),
        },
    )


class Trainer:
    """One run on the device: parameters, optimiser state, the compiled step and evaluation."""

    def __init__(self, book: RunBook):
        self.book = book
        cfg, plan = book.cfg, book.plan
        model = families.build(plan.model, plan.vocab_size, cfg.train.seed)
        self.graphdef, params = nnx.split(model, nnx.Param)
        mesh = make_mesh(cfg.mesh)
        host_params = jax.device_get(nnx.to_pure_dict(params))  # same values on every process
        self.params = jax.device_put(host_params, tree_shardings(host_params, mesh))
        multipliers = optimizer_multipliers(host_params, plan.model)
        tx = make_optimizer(cfg.train, plan.steps, multipliers)
        # Initialised inside jit with explicit layouts, so every process builds the same global arrays.
        opt_shardings = tree_shardings(jax.eval_shape(tx.init, self.params), mesh)
        self.opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(self.params)
        replicated = NamedSharding(mesh, PartitionSpec())
        self.batch_sharding = batch_sharding(mesh)
        self.schedule = jax.device_put(schedule_values(cfg.train, plan.steps), replicated)
        state_shardings = jax.tree.map(lambda x: x.sharding, (self.params, self.opt_state))
        batch_shape = jax.ShapeDtypeStruct(
            (cfg.train.batch_size, batch_width(plan.model)), jnp.int32, sharding=self.batch_sharding
        )

        def build_step():
            step = make_train_step(
                self.graphdef,
                optimizer_factory(cfg.train, multipliers),
                plan.grad_accum,
                (*state_shardings, replicated),
            )
            return step.lower(self.params, self.opt_state, batch_shape, self.schedule).compile()

        # Compiled ahead of the loop so compile time is measured apart (0 when this process has it already).
        t0 = time.perf_counter()
        self.step_fn, _ = programs.compiled(programs.key("step", cfg, plan, mesh), build_step)
        self.compile_s = time.perf_counter() - t0
        chunks = book.eval_batches()
        self.eval_chunks = global_batch(chunks, NamedSharding(mesh, PartitionSpec(None, BATCH_AXES)))
        micro = plan.grad_accum if chunks.shape[1] % plan.grad_accum == 0 else 1
        self.evaluate, _ = programs.compiled(
            programs.key("eval", cfg, plan, mesh, micro, chunks.shape),
            lambda: make_eval(self.graphdef, micro, replicated),
        )

    def resume(self) -> None:
        """Continue from the run's newest good checkpoint (or its `train.init_from` step), if any."""
        restored = self.book.resume({"params": self.params, "opt_state": self.opt_state})
        if restored is not None:
            self.params, self.opt_state = restored["params"], restored["opt_state"]

    def save(self, step: int, wall_s: float, since_log: tuple[float, int], keep: bool = True) -> float:
        """Evaluate, and checkpoint (unless `keep` is False: the last step of a run saving no checkpoints)."""
        t0 = time.perf_counter()
        losses_N = np.asarray(self.evaluate(self.params, self.eval_chunks))  # the evaluation's one host sync
        eval_loss = self.book.evaluated(losses_N, time.perf_counter() - t0)
        if keep:
            self.book.save(step, self.params, self.opt_state, eval_loss, wall_s, since_log)
        else:
            self.book.log_eval(step, eval_loss, wall_s)
        self.last_log = (step, time.perf_counter())  # evaluation time is not training throughput
        return eval_loss

    def run(self, runtime: dict[str, Any], swept: dict[str, Any] | None = None) -> dict:
        book, cfg, plan = self.book, self.book.cfg, self.book.plan
        t0 = time.perf_counter()
        wall = lambda: book.wall_before + time.perf_counter() - t0  # noqa: E731
        self.last_log = (book.step, t0)
        book.start(swept)
        status, pending = contract.FAILED, None
        norms: list[jax.Array] = []  # gradient norms since the last log, read with it (no host sync per step)
        # (steps clipped, steps) before `norms` since the last log: a resumed run starts from the counts its
        # checkpoint recorded, so its next logged fraction is the uninterrupted run's.
        carried = book.since_log
        preemption = Preemption()
        bar = tqdm(total=plan.steps, initial=book.step, disable=not cfg.progress, unit="step", dynamic_ncols=True)
        try:
            if book.needs_initial_checkpoint():
                self.save(0, 0.0, (0.0, 0))
            status = contract.COMPLETED
            for step in range(book.step, plan.steps):
                # The step is dispatched asynchronously, so the next batch is gathered while this one
                # computes; no thread is needed for that (one cost more than the gather on a busy core).
                seqs = global_batch(book.batch(step), self.batch_sharding)
                self.params, self.opt_state, metrics = self.step_fn(self.params, self.opt_state, seqs, self.schedule)
                norms.append(metrics["grad_norm"])
                done = step + 1
                # The previous step's metrics are read only now, so the device never idles on the host.
                if pending is not None and not self._log(*pending, bar, wall()):
                    status = contract.DIVERGED
                    break
                pending = None
                if done % cfg.train.log_every == 0 or done == plan.steps:
                    pending, norms, carried = (done, metrics, norms, carried), [], (0.0, 0)
                on_schedule = checkpoint.should_save(cfg.checkpoint, done, plan.steps)
                # The last step is always evaluated, even when no checkpoint is saved there.
                if on_schedule or preemption.requested or done == plan.steps:
                    if pending is not None and not self._log(*pending, bar, wall()):
                        status = contract.DIVERGED
                        break
                    pending = None
                    if on_schedule or done == plan.steps:
                        eval_loss = self.save(done, wall(), self._counts(norms, carried), keep=on_schedule)
                        bar.set_postfix(eval=f"{eval_loss:.3f}", refresh=False)
                    else:
                        since_log = self._counts(norms, carried)
                        book.save_for_preemption(done, self.params, self.opt_state, wall(), since_log)
                book.step = done
                bar.update(1)
                if preemption.requested and done < plan.steps:
                    status = contract.PREEMPTED
                    break
            if status == contract.COMPLETED and pending is not None and not self._log(*pending, bar, wall()):
                status = contract.DIVERGED
        except BaseException:  # a full disk, a second Ctrl-C, a bug: keep every checkpoint, close the trackers
            status = contract.FAILED
            raise
        finally:
            bar.close()
            preemption.restore()
            status = book.close(status)
        summary = book.summary(status, wall(), self.params, self.compile_s, runtime, stopped_by=preemption.name)
        self.preemption = preemption
        return summary

    def _log(
        self, step: int, metrics: dict, norms: list[jax.Array], carried: tuple[float, int], bar, wall_s: float
    ) -> bool:
        """Record a logged step (one host sync); False once the run has diverged. `norms`: the gradient
        norms of the steps since the previous log (after `carried`), for the share of them that were clipped."""
        loss, grad_norm, now = float(metrics["loss"]), float(metrics["grad_norm"]), time.perf_counter()
        clipped, steps = self._counts(norms, carried)
        tokens_per_s = (step - self.last_log[0]) * self.book.plan.tokens_per_step / max(now - self.last_log[1], 1e-9)
        self.last_log = (step, now)
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
        return self.book.log_train(step, loss, grad_norm, clipped / max(steps, 1), tokens_per_s, wall_s)

    def _counts(self, norms: list[jax.Array], carried: tuple[float, int]) -> tuple[float, int]:
        """(steps clipped, steps) since the last log: `carried` plus `norms`, as plain numbers (a host sync,
        taken only at a log or a checkpoint) for a row or a checkpoint's record."""
        over = np.asarray(jax.device_get(norms)) > self.book.cfg.train.grad_clip if norms else np.zeros(0, bool)
        return float(carried[0] + over.sum()), int(carried[1] + len(norms))


def train(cfg: RunConfig, runtime: dict[str, Any] | None = None, swept: dict[str, Any] | None = None) -> dict:
    """Train (or resume, or skip if finished) the run described by `cfg`; returns its summary.

    Everything that can refuse the launch runs before anything is written; training happens under
    the run's lock (RunBusy if another process holds it). `runtime` is what the entry point's
    `runtime.initialize` set up, recorded in the summary; `swept` the values that name the run in a sweep."""
    validate_config(cfg)
    initialize_distributed(cfg.mesh)
    ownership.check_run_dir(cfg.run_dir, cfg.overwrite)  # new, empty or ours; never anything else
    run_dir = Path(cfg.run_dir)
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
                return _train_here(cfg, plan, corpus, run_dir, runtime or {}, swept)
    print(already_line(done, run_dir), file=sys.stderr)
    return done


def _train_here(
    cfg: RunConfig, plan: Plan, corpus: Corpus, run_dir: Path, runtime: dict[str, Any], swept: dict[str, Any] | None
) -> dict:
    book = RunBook(cfg, plan, corpus, run_dir)
    warning = warn_if_repeats(plan.steps, book.order)
    if warning:
        warnings.warn(warning)
    trainer = Trainer(book)
    trainer.resume()
    summary = trainer.run(runtime, swept)
    if is_writer():
        rundir.write_summary(run_dir, summary)
        print(one_line(summary), file=sys.stderr)
    trainer.preemption.forward()
    return summary
