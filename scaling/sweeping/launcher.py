"""`hydra/launcher=local` (the sweeps' default; `packed` is its old name): a sweep's jobs on this machine,
with every core or accelerator busy.

- On a CPU, runs train side by side, each in its own worker process on its own cores with XLA's
  threads to match (scaling/sweeping/workers.py). How many at once comes from `sweep.jobs`: K as asked
  (each on cores/K cores), or 0, chosen per run from the machine's core count and the run's step size
  (scaling/planning/cores.py: a tiny model takes one core, so two cores train two runs). Runs that want
  every core, and `sweep.jobs=1`, train here one after another, as Hydra's basic launcher does. The
  longest runs start first, so the workers finish close together.
- On an accelerator, jobs whose runs share a shape and optimiser constants train together in one vmapped
  program (scaling/training/packed.py), `sweep.pack` at a time (0: chosen for the device).

Every job still goes through Hydra's own `run_job` (in its worker, or here), so callbacks, job numbering
and returns are Hydra's. Dropped grid points and finished runs are settled here at once. A run's failure
is recorded where it ran (scaling/sweeping/jobs.py); a worker that dies is recorded as its run's failure
and replaced, and the other runs go on. A preemption signal (SIGTERM, SIGUSR2) reaches every run in
flight, each checkpoints, no new run starts, and the sweep exits 128 + the signal (scaling/errors.py) for
its relaunch to resume it; a job that stops the sweep (a full disk: 74) lets the runs in flight finish,
then exits with its status.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, open_dict

from scaling import contract
from scaling.config import RunConfig, run_config
from scaling.data.load import load_corpus
from scaling.errors import ConfigError, exit_with
from scaling.planning.cores import split, step_flops
from scaling.planning.plan import make_plan
from scaling.runtime import can_pin, initialize, usable_cores
from scaling.sweeping.jobs import plan_job, record_failed, run_one, worker_failure
from scaling.sweeping.runs_table import completed_summary
from scaling.sweeping.workers import Pool, core_groups
from scaling.training.packed import auto_pack, pack_key, train_pack

log = logging.getLogger(__name__)


def run_hydra_job(hydra_context, task_function, singleton_state, config: DictConfig) -> JobReturn:
    """One job through Hydra's `run_job`, in a worker process (as Hydra's joblib launcher runs one)."""
    setup_globals()
    Singleton.set_state(singleton_state)
    return run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


def threads_for(cfg: RunConfig, plan, cores: int) -> int:
    """XLA threads for one run of the sweep: cores / sweep.jobs, or (0) chosen for the run's size."""
    if cfg.sweep.jobs > 0:
        return max(1, cores // cfg.sweep.jobs)
    return split(cores, step_flops(plan)).threads


class LocalLauncher(Launcher):
    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        configs = [self._job_config(overrides, initial_job_idx + i) for i, overrides in enumerate(job_overrides)]
        jobs = self._trainable(configs)
        asked_to_pack = any(runs[0][0].sweep.pack > 1 for runs, _ in jobs.values())
        packing = jax.default_backend() != "cpu" or asked_to_pack  # packing measured slower on a CPU
        trained = self._train_packs(jobs) if packing else self._side_by_side(configs, jobs)
        returns = []
        for i, config in enumerate(configs):
            if isinstance(trained.get(i), JobReturn):
                returns.append(trained[i])
                continue
            task = self.task_function if i not in trained else (lambda _cfg, result=trained[i]: result)
            returns.append(self._run_here(config, task))
        return returns

    def _run_here(self, config: DictConfig, task) -> JobReturn:
        return run_job(
            hydra_context=self.hydra_context,
            task_function=task,
            config=config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )

    def _job_config(self, overrides: Sequence[str], index: int) -> DictConfig:
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = config.hydra.job.num = index
        return config

    def _trainable(self, configs: list[DictConfig]) -> dict[int, tuple[list[tuple[RunConfig, dict]], object]]:
        """The jobs that will train, job index -> (its runs, one per seed, as (config, swept values); their
        plan, which seeds share); dropped grid points, finished jobs and bad configs are left out (their jobs
        settle them at once, here)."""
        jobs = {}
        for i, config in enumerate(configs):
            cfg = run_config(config)
            try:  # bad input (a data path that matches nothing, a filter that leaves nothing): one line, exit 2
                runs, dropped = plan_job(cfg, config.hydra.sweeper.get("params"), config.hydra.overrides.task)
                if not dropped and any(completed_summary(c) is None for c, _ in runs):
                    jobs[i] = (runs, make_plan(runs[0][0], load_corpus(runs[0][0].data, progress=False).vocab_size))
            except ConfigError as err:
                exit_with(err, debug=cfg.debug)
        return jobs

    def _side_by_side(self, configs: list[DictConfig], jobs: dict) -> dict[int, JobReturn]:
        """Train the jobs whose runs leave cores to spare in worker pools, one pool per thread count,
        longest runs first; job index -> its JobReturn. The rest are left to `launch` (here, in turn)."""
        cores = usable_cores()
        if not jobs or not can_pin():
            return {}
        by_threads: dict[int, list[int]] = {}
        for i, (runs, plan) in jobs.items():
            threads = threads_for(runs[0][0], plan, len(cores))
            if threads < len(cores):
                by_threads.setdefault(threads, []).append(i)
        returns: dict[int, JobReturn] = {}
        stop: list[int] = []  # exit statuses of jobs that stopped the sweep
        function = functools.partial(run_hydra_job, self.hydra_context, self.task_function, Singleton.get_state())
        for threads, members in sorted(by_threads.items()):
            members.sort(key=lambda i: -len(jobs[i][0]) * jobs[i][1].steps * step_flops(jobs[i][1]))
            groups = core_groups(cores, min(len(cores) // threads, len(members)), threads)
            log.info(f"training {len(members)} runs {len(groups)} at a time, {threads} thread(s) each")
            with Pool(groups, function, forward=True) as pool:
                pool.run(
                    [(i, configs[i]) for i in members], functools.partial(self._settle, jobs, configs, returns, stop)
                )
            if stop or pool.signal is not None:
                code = stop[0] if stop else 128 + pool.signal  # (a signal that found no run in flight)
                print(
                    f"sweep stopped ({'a preemption signal' if pool.signal else f'exit status {code}'})",
                    file=sys.stderr,
                )
                raise SystemExit(code)
        return returns

    def _settle(self, jobs: dict, configs: list, returns: dict, stop: list, i: int, outcome: tuple) -> None:
        """Keep job i's JobReturn from its worker; record a job that stopped the sweep, raised, or lost its worker."""
        kind, value, job, config = *outcome, jobs[i], configs[i]
        if kind == "done":
            returns[i] = value
        elif kind == "exit":
            stop.append(value)
        else:
            reason = worker_failure(kind, value)
            summary = {"status": contract.FAILED, "error": reason[:2000]}
            for cfg, _ in job[0]:  # every seed of the job that had not finished when its worker went
                if completed_summary(cfg) is None:
                    record_failed(cfg, reason)
            returns[i] = self._run_here(config, lambda _cfg, result=summary: result)

    def _train_packs(self, jobs: dict) -> dict[int, dict]:
        """Train every group of packable runs, `sweep.pack` at a time; the job index -> what its task returns.
        A job some of whose runs (seeds) trained in a pack trains the rest here too, so its task has them all."""
        groups: dict[tuple, list[tuple[int, RunConfig, dict]]] = {}
        runtime = None
        for i, (runs, plan) in jobs.items():
            if any(cfg.sweep.branches for cfg, _ in runs):
                continue
            for cfg, swept in runs:
                if completed_summary(cfg) is None:
                    runtime = runtime or initialize(cfg.compilation_cache)
                    groups.setdefault(pack_key(cfg, plan), []).append((i, cfg, swept))
        trained: dict[int, dict[str, dict]] = {}
        for members in groups.values():
            size = auto_pack(members[0][1].sweep.pack)
            for start in range(0, len(members), size):
                pack = members[start : start + size]
                if len(pack) < 2:
                    continue
                log.info(f"packing {len(pack)} runs in one program")
                summaries = train_pack([cfg for _, cfg, _ in pack], runtime, [swept for _, _, swept in pack])
                for (i, cfg, swept), summary in zip(pack, summaries):
                    trained.setdefault(i, {})[Path(cfg.run_dir).name] = run_one(
                        cfg, swept, {}, runtime, trained=summary
                    )
        for i, done in trained.items():
            for cfg, swept in jobs[i][0]:
                if Path(cfg.run_dir).name not in done:
                    done[Path(cfg.run_dir).name] = run_one(cfg, swept, {}, runtime)
        return {i: done if len(done) > 1 else next(iter(done.values())) for i, done in trained.items()}
