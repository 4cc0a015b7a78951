"""Several runs of one shape in one compiled program: their parameters, optimiser states, batches and
learning-rate schedules stacked on a leading axis and the train step `jax.vmap`ped over it.

Runs may differ in seed, data seed, learning rate, warmup and length (`pack_key` says what must match): each keeps its own RunBook
(data order, checkpoints, metrics, summary), so its run directory looks as if it had trained alone.
A run that finishes (or diverges) leaves the pack, which goes on smaller (one more compilation).
Vectorised arithmetic is not bit-identical to the one-run program (a batched matmul sums in another
order), so a packed run matches its solo twin to float tolerance, not bit for bit (tested). Resuming
works per run as usual; the runs of a pack start together from the same step.

Whether packing pays depends on the device: on a GPU a small model leaves most of the device idle and
K of them share it; on a CPU the measured vmapped step was slower than K steps one after another
(benchmarks/RESULTS.md), so `sweep.pack=0` (automatic) packs only on accelerators.
"""

from __future__ import annotations

import contextlib
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from scaling import contract
from scaling.config import RunConfig
from scaling.data.load import load_corpus
from scaling.model import families
from scaling.model.mup import optimizer_multipliers
from scaling.planning.plan import Plan, make_plan
from scaling.training import checkpoint, ownership, programs, rundir
from scaling.training.mesh import is_writer, make_mesh
from scaling.training.optimizer import make_optimizer, optimizer_factory
from scaling.training.outcome import one_line
from scaling.training.relaunch import exclusive, prepare_run_dir, resolved_config
from scaling.training.runbook import RunBook
from scaling.training.schedule import schedule_values
from scaling.training.step import make_eval, make_packed_step
from scaling.training.trainer import Preemption, with_run_order
from scaling.training.validate import validate_config, validate_plan

AUTO_PACK_ACCELERATOR = 8  # sweep.pack=0 on a GPU/TPU: up to this many runs per program


def auto_pack(requested: int) -> int:
    """sweep.pack: K as asked, or (0) automatic: 1 on CPU, where packing measured slower, else 8."""
    if requested > 0:
        return requested
    return 1 if jax.default_backend() == "cpu" else AUTO_PACK_ACCELERATOR


def pack_key(cfg: RunConfig, plan: Plan) -> tuple:
    """Runs with equal keys compile to one program and can train in one pack."""
    t = cfg.train
    return (
        repr(plan.model),
        plan.vocab_size,
        t.batch_size,
        plan.grad_accum,
        t.schedule,
        t.b1,
        t.b2,
        t.eps,
        t.weight_decay,
        t.grad_clip,
        repr(cfg.data),
        repr(cfg.mesh),
    )


def _stack(trees: list[Any]) -> Any:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _take(tree: Any, index: Any) -> Any:
    return jax.tree.map(lambda x: x[index], tree)


class PackedTrainer:
    """K runs (RunBooks of one signature, all at the same step) trained in one vmapped program."""

    def __init__(self, books: list[RunBook]):
        self.books = books
        first = books[0]
        cfg, plan = first.cfg, first.plan
        graphdef, _ = nnx.split(families.build(plan.model, plan.vocab_size, 0), nnx.Param)
        params = [
            nnx.to_pure_dict(nnx.split(families.build(plan.model, plan.vocab_size, b.cfg.train.seed), nnx.Param)[1])
            for b in books
        ]
        multipliers = optimizer_multipliers(params[0], plan.model)
        tx = make_optimizer(cfg.train, plan.steps, multipliers)
        self.params, self.opt_state = _stack(params), _stack([tx.init(p) for p in params])
        self.schedules = jnp.asarray(np.stack([schedule_values(b.cfg.train, b.plan.steps) for b in books]))
        self.step_fn = make_packed_step(graphdef, optimizer_factory(cfg.train, multipliers), plan.grad_accum)
        chunks = first.eval_batches()
        self.eval_chunks = jnp.asarray(chunks)
        micro = plan.grad_accum if chunks.shape[1] % plan.grad_accum == 0 else 1
        mesh = make_mesh(cfg.mesh)
        self.evaluate, _ = programs.compiled(
            programs.key("eval", cfg, plan, mesh, micro, chunks.shape), lambda: make_eval(graphdef, micro)
        )

    def resume(self) -> None:
        """Each run from its own newest checkpoint; a pack needs them all at one step."""
        params, opt_state = [], []
        for i, book in enumerate(self.books):
            abstract = {"params": _take(self.params, i), "opt_state": _take(self.opt_state, i)}
            restored = book.resume(abstract)
            params.append(restored["params"] if restored else abstract["params"])
            opt_state.append(restored["opt_state"] if restored else abstract["opt_state"])
        if len({b.step for b in self.books}) > 1:
            raise ValueError("the runs of a pack must resume from the same step; train them apart")
        self.params, self.opt_state = _stack(params), _stack(opt_state)

    def _save(self, slot: int, i: int, step: int, wall_s: float, keep: bool = True) -> None:
        """Evaluate run i, which sits at `slot` of the stacked state, and checkpoint it unless `keep` is
        False (the last step of a run saving no checkpoints)."""
        params, t0 = _take(self.params, slot), time.perf_counter()
        losses_N = np.asarray(self.evaluate(params, self.eval_chunks))
        eval_loss = self.books[i].evaluated(losses_N, time.perf_counter() - t0)
        if keep:
            self.books[i].save(step, params, _take(self.opt_state, slot), eval_loss, wall_s, self._since_log(slot, i))
        else:
            self.books[i].log_eval(step, eval_loss, wall_s)

    def _since_log(self, slot: int, i: int) -> tuple[float, int]:
        return float(self.clipped[slot]), self.since_log[i]

    def run(self, runtime: dict[str, Any], swept: list[dict[str, Any]]) -> list[dict]:
        """Train every run to its end; the summaries in the order of the books."""
        t0 = time.perf_counter()
        wall = lambda book: book.wall_before + time.perf_counter() - t0  # noqa: E731
        summaries: dict[int, dict] = {}
        active = list(range(len(self.books)))  # book indices still in the pack, in stack order
        # Steps clipped since each run's last log, counted on the device (no host sync per step); a resumed
        # run starts from the counts its checkpoint recorded.
        self.clipped = jnp.asarray([self.books[i].since_log[0] for i in active], jnp.float32)
        self.since_log = {i: self.books[i].since_log[1] for i in active}
        preemption = Preemption()
        try:
            for i in active:
                self.books[i].start(swept[i])
                if self.books[i].needs_initial_checkpoint():
                    self._save(i, i, 0, 0.0)
            last_log = {i: (self.books[i].step, t0) for i in active}
            while active:
                step = self.books[active[0]].step
                seqs = jnp.asarray(np.stack([self.books[i].batch(step) for i in active]))
                self.params, self.opt_state, metrics = self.step_fn(self.params, self.opt_state, seqs, self.schedules)
                clips = jnp.asarray([self.books[i].cfg.train.grad_clip for i in active], jnp.float32)
                self.clipped = self.clipped + (metrics["grad_norm"] > clips)
                done, leaving = step + 1, []
                for slot, i in enumerate(active):
                    book = self.books[i]
                    book.step = done
                    status = self._after_step(slot, i, done, metrics, last_log, wall(book), preemption.requested)
                    if status is not None:
                        summaries[i] = self._finish(slot, i, status, wall(book), runtime, preemption.name)
                        leaving.append(slot)
                if leaving:
                    keep = np.array([s for s in range(len(active)) if s not in leaving], int)
                    active = [active[s] for s in keep]
                    self.params, self.opt_state = _take(self.params, keep), _take(self.opt_state, keep)
                    self.schedules, self.clipped = self.schedules[keep], self.clipped[keep]
        except BaseException:  # a full disk, a second Ctrl-C, a bug: the runs still in the pack keep their
            for i in active:  # checkpoints and close their trackers, as a single run's do
                with contextlib.suppress(Exception):
                    self.books[i].close(contract.FAILED)
            raise
        finally:
            preemption.restore()
        self.preemption = preemption
        return [summaries[i] for i in range(len(self.books))]

    def _after_step(
        self, slot: int, i: int, done: int, metrics: dict, last_log: dict, wall_s: float, preempted: bool
    ) -> str | None:
        """Log, evaluate and checkpoint run i after step `done`; its final status if it leaves the pack."""
        book = self.books[i]
        cfg, plan = book.cfg, book.plan
        self.since_log[i] += 1
        if done % cfg.train.log_every == 0 or done == plan.steps:
            now = time.perf_counter()
            tokens_per_s = (done - last_log[i][0]) * plan.tokens_per_step / max(now - last_log[i][1], 1e-9)
            last_log[i] = (done, now)
            clipped = float(self.clipped[slot]) / self.since_log[i]
            self.clipped, self.since_log[i] = self.clipped.at[slot].set(0.0), 0
            loss, grad_norm = float(metrics["loss"][slot]), float(metrics["grad_norm"][slot])
            if not book.log_train(done, loss, grad_norm, clipped, tokens_per_s, wall_s):
                return contract.DIVERGED
        on_schedule = checkpoint.should_save(cfg.checkpoint, done, plan.steps)
        if on_schedule or done == plan.steps:  # the last step is always evaluated
            self._save(slot, i, done, wall_s, keep=on_schedule)
            last_log[i] = (done, time.perf_counter())
        elif preempted:
            since_log = self._since_log(slot, i)
            book.save_for_preemption(done, _take(self.params, slot), _take(self.opt_state, slot), wall_s, since_log)
        if preempted and done < plan.steps:
            return contract.PREEMPTED
        return contract.COMPLETED if done == plan.steps else None

    def _finish(
        self, slot: int, i: int, status: str, wall_s: float, runtime: dict[str, Any], stopped_by: str | None
    ) -> dict:
        book = self.books[i]
        status = book.close(status)
        runtime = {**runtime, "packed": len(self.books)}
        summary = book.summary(status, wall_s, _take(self.params, slot), 0.0, runtime, stopped_by=stopped_by)
        if is_writer():
            rundir.write_summary(book.run_dir, summary)
        return summary


def train_pack(cfgs: list[RunConfig], runtime: dict[str, Any], swept: list[dict[str, Any]]) -> list[dict]:
    """Train runs of one signature together (each checked, locked and readied as `trainer.train` does);
    their summaries in order. Runs that are finished already are the caller's to leave out."""
    with ExitStack() as stack:
        books = []
        for cfg in cfgs:
            validate_config(cfg)
            ownership.check_run_dir(cfg.run_dir, cfg.overwrite)
            run_dir = Path(cfg.run_dir)
            cfg = with_run_order(cfg, run_dir)
            corpus = load_corpus(cfg.data, progress=False)
            plan = make_plan(cfg, corpus.vocab_size)
            validate_plan(cfg, plan, corpus)
            resolved = resolved_config(cfg, plan, corpus)
            stack.enter_context(exclusive(run_dir))
            if prepare_run_dir(cfg, run_dir, resolved) is not None:
                raise ValueError(f"{run_dir} is finished already: leave it out of the pack")
            books.append(RunBook(cfg, plan, corpus, run_dir))
        if len({pack_key(book.cfg, book.plan) for book in books}) > 1:
            raise ValueError("the runs of a pack must share a signature (shape, optimiser constants, batch layout)")
        trainer = PackedTrainer(books)
        trainer.resume()
        summaries = trainer.run(runtime, swept)
    for summary in summaries:
        print(one_line(summary), file=sys.stderr)
    trainer.preemption.forward()
    return summaries
