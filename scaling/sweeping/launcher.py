"""`hydra/launcher=packed`: Hydra's basic launcher, except that jobs whose runs share a shape and
optimiser constants train together in one vmapped program (scaling/training/packed.py), `sweep.pack` at a
time (0: chosen for the device). Every job still goes through Hydra's own `run_job`, so callbacks,
job numbering and returns are Hydra's; a packed job's task returns what its pack recorded. Jobs that
cannot pack (dropped grid points, WSD ladders, finished runs, a group of one) run as they would under
the basic launcher.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, configure_log, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, open_dict

from scaling.config import run_config
from scaling.data.load import load_corpus
from scaling.planning.plan import make_plan
from scaling.runtime import initialize
from scaling.sweeping.jobs import plan_job, run_one
from scaling.sweeping.runs_table import completed_summary
from scaling.training.packed import auto_pack, pack_key, train_pack

log = logging.getLogger(__name__)


class PackingLauncher(Launcher):
    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        configs = [self._job_config(overrides, initial_job_idx + i) for i, overrides in enumerate(job_overrides)]
        trained = self._train_packs(configs)
        returns = []
        for i, config in enumerate(configs):
            task = self.task_function if i not in trained else (lambda _cfg, result=trained[i]: result)
            returns.append(
                run_job(
                    hydra_context=self.hydra_context,
                    task_function=task,
                    config=config,
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
            )
        return returns

    def _job_config(self, overrides: Sequence[str], index: int) -> DictConfig:
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = config.hydra.job.num = index
        return config

    def _train_packs(self, configs: list[DictConfig]) -> dict[int, dict]:
        """Train every group of packable runs, `sweep.pack` at a time; the job index -> what its task returns.
        A job some of whose runs (seeds) trained in a pack trains the rest here too, so its task has them all."""
        groups: dict[tuple, list[tuple[int, object, dict]]] = {}
        job_runs, runtime = {}, None
        for i, config in enumerate(configs):
            runs, dropped = plan_job(
                run_config(config), config.hydra.sweeper.get("params"), config.hydra.overrides.task
            )
            if dropped or any(cfg.sweep.branches for cfg, _ in runs):
                continue
            job_runs[i] = runs
            for cfg, swept in runs:
                if completed_summary(cfg) is not None:
                    continue
                runtime = runtime or initialize(cfg.compilation_cache)
                plan = make_plan(cfg, load_corpus(cfg.data, progress=False).vocab_size)
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
            for cfg, swept in job_runs[i]:
                if Path(cfg.run_dir).name not in done:
                    done[Path(cfg.run_dir).name] = run_one(cfg, swept, {}, runtime)
        return {i: done if len(done) > 1 else next(iter(done.values())) for i, done in trained.items()}
