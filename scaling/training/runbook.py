"""One run's bookkeeping, whatever trains it: its data order, metrics rows, checkpoints, divergence
rule, trackers and summary. The single-run trainer (scaling/training/trainer.py) and the packed trainer
(scaling/training/packed.py, several runs of one shape in one program) both keep one `RunBook` per run, so a
run directory is written the same way however the run was trained.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from scaling import contract, diskspace
from scaling.config import RunConfig
from scaling.data.corpus import Corpus
from scaling.data.eval_set import run_eval_windows
from scaling.data.order import DataOrder, check_ids, n_sequences, sequences
from scaling.errors import ConfigError
from scaling.model.attention import resolve_attention_impl
from scaling.model.objectives import eval_batch, make_batch
from scaling.planning.plan import Plan
from scaling.training import checkpoint, rundir
from scaling.training.divergence import Divergence, DivergenceMonitor
from scaling.training.mesh import is_writer
from scaling.training.provenance import environment
from scaling.training.schedule import learning_rate, weight_decay
from scaling.training.step import eval_chunks
from scaling.training.tracking import Tracker

SINCE_LOG = "clipped_since_log"  # a checkpoint record's [steps clipped, steps] since the last logged step
# Batches are gathered for this many tokens of steps at once (a quarter of a million: one step of a
# large model, hundreds of a tiny one's).
BATCH_BLOCK_TOKENS = 1 << 18


class RunBook:
    """Everything one run writes, and the state a resume rebuilds (step, rows, divergence rule)."""

    def __init__(self, cfg: RunConfig, plan: Plan, corpus: Corpus, run_dir: Path):
        self.cfg, self.plan, self.corpus, self.run_dir = cfg, plan, corpus, run_dir
        self.data_seed = cfg.train.data_seed if cfg.train.data_seed is not None else cfg.train.seed
        self.order = DataOrder(
            seed=self.data_seed,
            batch_size=cfg.train.batch_size,
            n_seqs=n_sequences(len(corpus.train), plan.model.seq_len),
            kind=cfg.data.order,
        )
        self.eval_set = run_eval_windows(
            cfg.data, corpus.val, corpus.meta.get("eot_id"), plan.model.seq_len, cfg.train.batch_size
        )
        # The held-out windows' ids are checked as the batches' are (a token file changed under the run).
        check_ids(self.eval_set.windows_NxT1, plan.vocab_size, self._source("val_source"), "the held-out windows")
        self.eval_se, self.eval_seconds = math.nan, []  # the last evaluation's error; each one's time
        self.window_losses: np.ndarray | None = None  # the last evaluation's loss per window
        self.mngr = checkpoint.manager(run_dir, cfg.checkpoint)
        self.checkpoint_bytes = checkpoint.size_estimate(plan.params.total)
        self.monitor = DivergenceMonitor(plan.vocab_size)
        self.rows: list[dict] = []
        self.step, self.wall_before = 0, 0.0
        # (steps clipped, steps) since the last log at `step`: a checkpoint records them, so that the first
        # row logged after a resume holds the uninterrupted run's clipped_fraction.
        self.since_log: tuple[float, int] = (0.0, 0)
        self.tracker: Tracker | None = None
        self._block: tuple[int, np.ndarray] = (0, np.zeros((0,)))  # (first step, its batches): see `batch`
        # Seconds this process spent writing checkpoints: with eval_s, where a run's wall time goes
        # besides its steps, in summary.json.
        self.checkpoint_s = 0.0
        # Every step's lr, computed once: per row it was a dozen eager ops, more host time than a
        # small model's step on a busy core. On the CPU: on an accelerator it would queue behind the step.
        with jax.default_device(jax.local_devices(backend="cpu")[0]):
            self.lrs = np.asarray(learning_rate(cfg.train, plan.steps, np.arange(plan.steps + 1)))

    def batch(self, step: int) -> np.ndarray:
        """The batch of `step`, a pure function of the run's data seed and the step: the (B, T + 1) token windows
        of the data order, as the model's family trains on them (scaling/model/objectives.py).

        Windows are gathered BATCH_BLOCK_TOKENS at a time: the data order's few dozen vector operations per call
        cost more host time per step than a tiny model's step itself when taken one step at a time. Ids
        outside the vocabulary (a token file changed under the run) stop it, naming the file, instead of
        a NaN loss."""
        start, block = self._block
        if not start <= step < start + len(block):
            b, t1 = self.cfg.train.batch_size, self.plan.model.seq_len + 1
            count = max(1, BATCH_BLOCK_TOKENS // (b * t1))
            ids = self.order.indices(step, count)
            self._block = start, block = step, sequences(self.corpus.train, ids, t1 - 1).reshape(count, b, t1)
            what = f"the batch of step {step}" if count == 1 else f"the batches of steps {step}-{step + count - 1}"
            check_ids(block, self.plan.vocab_size, self._source("source"), what)
        return make_batch(self.plan.model, self.plan.vocab_size, block[step - start], self.data_seed, step)

    def eval_batches(self) -> np.ndarray:
        """The held-out windows as the family evaluates them (one row per window of `eval_set`, corrupted once
        by a fixed key), in chunks of the batch size (C, B, W)."""
        rows = eval_batch(self.plan.model, self.plan.vocab_size, self.eval_set.windows_NxT1)
        return eval_chunks(rows, self.cfg.train.batch_size)

    def _source(self, key: str) -> str:
        """The file a split was read from (data=tokens: the user's; val_source only when given apart)."""
        return str(self.corpus.meta.get(key) or self.corpus.meta.get("source") or "the corpus")

    def resume(self, abstract: dict[str, Any]) -> dict[str, Any] | None:
        """The newest good checkpoint of this run, else `train.init_from`'s step (a WSD branch), else None;
        the run's step, wall time, metrics rows and divergence state are set to match it."""
        restored = checkpoint.restore_latest(self.mngr, abstract)
        source = self.run_dir
        if restored is None and self.cfg.train.init_from is not None:
            source = Path(self.cfg.train.init_from)
            try:
                restored = checkpoint.restore_step(source, self.cfg.train.init_step, abstract)
            except checkpoint.DamagedCheckpoint as err:
                raise ConfigError(
                    "train.init_from",
                    f"{err} in {source}",
                    "relaunch that run (it saves the step anew) or start from another step",
                ) from err
        if restored is None:
            return None
        self.step, self.wall_before = restored["record"]["step"], restored["record"].get("wall_s", 0.0)
        self.since_log = tuple(restored["record"].get(SINCE_LOG) or (0.0, 0))
        needed = self._last_log(self.step) if source == self.run_dir else 0  # (a new branch: its parent's rows)
        self.rows = rundir.read_metrics(source, self.step, needed).to_dict("records")
        for row in self.rows:  # the divergence rule's state is a function of the losses logged so far
            if not math.isnan(row["train_loss"]):
                self.monitor.add(row["step"], row["train_loss"])
        print(f"resuming {self.run_dir} from step {self.step} of {source}", file=sys.stderr)
        return restored

    def needs_initial_checkpoint(self) -> bool:
        """Step 0 is on the schedule and not saved yet: a run resumed from its step-0 checkpoint (a full
        disk or a kill can stop it right there) must not save that step again (Orbax refuses it)."""
        return (
            self.step == 0
            and checkpoint.should_save(self.cfg.checkpoint, 0, self.plan.steps)
            and 0 not in self.mngr.all_steps()
        )

    def _last_log(self, step: int) -> int:
        """The last logged step at or before `step` (0 if none): metrics.parquet must hold it to resume there."""
        return step if step == self.plan.steps else step // self.cfg.train.log_every * self.cfg.train.log_every

    def start(self, swept: dict[str, Any] | None = None) -> None:
        """Open the trackers (after a resume, so that they continue the curves from the resumed step)."""
        if is_writer() and (self.cfg.tracker.tensorboard or self.cfg.tracker.wandb):
            config = {**_flat(dataclasses.asdict(self.cfg)), **(swept or {})}
            self.tracker = Tracker(
                self.cfg.tracker,
                self.run_dir,
                self.step,
                self.plan.tokens_per_step,
                self.plan.flops_per_token["6n"],
                config,
                self.cfg.sweep.name,
                self.run_dir.name,
            )

    def row(self, step: int, **values) -> dict:
        tokens = step * self.plan.tokens_per_step
        lr = float(self.lrs[step])
        base = {"step": step, "tokens": tokens, "flops": tokens * self.plan.flops_per_token["6n"], "lr": lr}
        blank = {name: math.nan for name in contract.METRIC_COLUMNS if name not in base}
        return {**base, **blank, **values}

    def log_train(
        self, step: int, loss: float, grad_norm: float, clipped: float, tokens_per_s: float, wall_s: float
    ) -> bool:
        """Record a logged step; False once the run has diverged (scaling/training/divergence.py)."""
        row = self.row(
            step,
            train_loss=loss,
            grad_norm=grad_norm,
            clipped_fraction=clipped,
            tokens_per_s=tokens_per_s,
            wall_s=wall_s,
        )
        self.rows.append(row)
        if self.tracker is not None:
            self.tracker.log(
                step,
                {
                    "train/loss": loss,
                    "train/lr": row["lr"],
                    "train/grad_norm": grad_norm,
                    "train/clipped_fraction": clipped,
                    "train/tokens_per_s": tokens_per_s,
                },
            )
        return self.monitor.add(step, loss) is None

    def evaluated(self, window_losses_N: np.ndarray, seconds: float) -> float:
        """An evaluation's loss, from the loss of every window; its error over documents and its time are kept."""
        # (a `windows` set of runs made before documents may end in a partial batch, which is not scored)
        self.window_losses = window_losses_N[: len(self.eval_set.document_N)]
        loss, self.eval_se = contract.loss_and_se(self.window_losses, self.scored_documents)
        self.eval_seconds.append(seconds)
        return loss

    @property
    def scored_documents(self) -> np.ndarray:
        """The document of each window the last evaluation scored."""
        return self.eval_set.document_N[: len(self.window_losses)]

    def log_eval(self, step: int, eval_loss: float, wall_s: float) -> None:
        """An evaluation row (and its tracker point)."""
        self.rows.append(self.row(step, eval_loss=eval_loss, wall_s=wall_s))
        if self.tracker is not None:
            self.tracker.log(step, {"eval/loss": eval_loss})

    def save(
        self, step: int, params: Any, opt_state: Any, eval_loss: float, wall_s: float, since_log: tuple[float, int]
    ) -> None:
        """A checkpoint on the schedule, with its evaluation, and the metrics table so far."""
        self.log_eval(step, eval_loss, wall_s)
        record = {
            "tokens": step * self.plan.tokens_per_step,
            "wall_s": wall_s,
            "eval_loss": eval_loss,
            SINCE_LOG: list(since_log),
        }
        t0 = time.perf_counter()
        self.require_space()
        checkpoint.save(self.mngr, step, params, opt_state, record)
        if is_writer():
            rundir.write_metrics(self.run_dir, self.rows)
            if self.window_losses is not None:
                rundir.write_eval_windows(self.run_dir, self.scored_documents, self.window_losses)
        self.checkpoint_s += time.perf_counter() - t0

    def save_for_preemption(
        self, step: int, params: Any, opt_state: Any, wall_s: float, since_log: tuple[float, int]
    ) -> None:
        """A step off the schedule: no evaluation (it would add a row an uninterrupted run lacks,
        and the grace period before SIGKILL is short); removed once the run completes."""
        record = {
            "tokens": step * self.plan.tokens_per_step,
            "wall_s": wall_s,
            "preemption": True,
            SINCE_LOG: list(since_log),
        }
        self.require_space()
        checkpoint.save(self.mngr, step, params, opt_state, record)
        if is_writer():  # the rows this checkpoint resumes after, should SIGKILL follow before the run closes
            rundir.write_metrics(self.run_dir, self.rows)

    def require_space(self) -> None:
        """DiskFull, in one line, before a checkpoint that cannot fit (with room for a save still in
        flight). One process only: in a multi-process job the processes could read different free
        space and disagree, so there a full disk is reported when the save itself fails."""
        if jax.process_count() == 1:
            in_flight = 2 if self.mngr.is_saving_in_progress() else 1
            diskspace.require_free(self.run_dir / contract.CHECKPOINT_DIR, in_flight * self.checkpoint_bytes)

    def close(self, status: str) -> str:
        """Wait for saves; a completed run drops the checkpoints preemption added off the schedule.
        Returns the final status (a completed run whose loss ended too high is diverged after all)."""
        if status == contract.COMPLETED and self.monitor.finish() is not None:
            status = contract.DIVERGED
        rows = rundir.metrics_frame(self.rows)
        final_eval = rows.eval_loss[rows.step == self.step].to_numpy(float)  # the last step is always evaluated
        if status == contract.COMPLETED and not np.isfinite(final_eval).all():
            # NaN on held-out data after a healthy train loss: no result to fit, so never called completed.
            self.monitor.verdict = Divergence(self.step, f"the eval loss at step {self.step} is not finite")
            status = contract.DIVERGED
        self.mngr.wait_until_finished()
        if status == contract.COMPLETED:  # the folder then matches an uninterrupted run's
            checkpoint.drop_off_schedule(self.mngr, self.cfg.checkpoint, self.plan.steps)
            self.mngr.wait_until_finished()
        self.mngr.close()
        if status == contract.FAILED and self.tracker is not None:
            self.tracker.close()  # (a run that ends otherwise closes them in `summary`, after its last numbers)
        if is_writer():
            rundir.write_metrics(self.run_dir, self.rows)
        return status

    def summary(
        self,
        status: str,
        wall_s: float,
        params: Any,
        compile_s: float,
        runtime: dict[str, Any],
        stopped_by: str | None = None,
    ) -> dict:
        """summary.json: everything a scaling fit needs about the run, and what ran where (a preempted
        run also the signal that stopped it)."""
        df = rundir.metrics_frame(self.rows)
        train, evals = df.dropna(subset=["train_loss"]), df.dropna(subset=["eval_loss"])
        plan, meta = self.plan, self.corpus.meta
        diverged = self.monitor.verdict
        summary = {
            "status": status,
            **({contract.DIVERGED_STEP: diverged.step, contract.DIVERGED_REASON: diverged.reason} if diverged else {}),
            **({contract.STOP_SIGNAL: stopped_by} if status == contract.PREEMPTED else {}),
            "run_dir": str(self.run_dir),
            contract.FAMILY: plan.model.family,
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
            "grad_norm": float(train.grad_norm.iloc[-1]) if len(train) else math.nan,  # at the last log
            "clipped_fraction": _clipped_fraction(train),
            # the final loss's standard error over validation documents (scaling/data/eval_set.py), and what
            # evaluating cost this launch: the first evaluation compiles, so the median is the one to quote
            contract.FINAL_EVAL_LOSS_SE: self.eval_se,
            **self.eval_set.describe(),
            "eval_count": len(self.eval_seconds),
            "eval_s": float(np.sum(self.eval_seconds)),
            "eval_s_median": float(np.median(self.eval_seconds)) if self.eval_seconds else math.nan,
            "weight_decay_applied": weight_decay(self.cfg.train, plan.steps),
            contract.SEED: self.cfg.train.seed,
            "data_seed": self.order.seed,
            "wall_s": wall_s,
            "compile_s": compile_s,
            "checkpoint_s": self.checkpoint_s,
            # XLA:CPU's compute threads: equal counts give equal numbers whatever trains beside the run
            "cpu_threads": runtime.get("cpu_threads"),
            contract.PARAMS_DIGEST: checkpoint.params_digest(params),
            contract.CORPUS_HASH: meta.get(contract.CORPUS_HASH),
            contract.TOKENIZER_HASH: meta.get(contract.TOKENIZER_HASH),
            "attention_impl": resolve_attention_impl(plan.model),
            **environment(),
            "runtime": runtime,
        }
        if self.tracker is not None:
            self.tracker.finish(_flat(dataclasses.asdict(self.cfg)), summary)
        return summary


def _clipped_fraction(train: Any) -> float:
    """The share of all steps up to the last log whose gradients were clipped (each logged row holds the
    share of the steps since the row before it)."""
    if not len(train):
        return math.nan
    steps = train.step.to_numpy(float)
    return float(np.sum(train.clipped_fraction.to_numpy(float) * np.diff(steps, prepend=0.0)) / steps[-1])


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}: the config as hyperparameters."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
