"""Compiled programs kept for the life of the process, so that a process training many runs (a sweep
job) compiles each shape once: the train step and the evaluation of one model shape, optimiser and
batch layout are the same program whatever the run's seed, data, learning rate or budget (the schedule
is an argument of the step). The cache holds a bounded number of programs, so memory does not grow
with the number of runs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from jax.sharding import Mesh

from scaling.config import RunConfig
from scaling.planning.plan import Plan

MAX_PROGRAMS = 16  # the largest demo has 8 shapes; each shape keeps a train step and an evaluation

_programs: OrderedDict[Hashable, Any] = OrderedDict()


def key(kind: str, cfg: RunConfig, plan: Plan, mesh: Mesh, *extra: Hashable) -> tuple:
    """Everything a compiled step or evaluation depends on: the model, the optimiser's constants (not
    the schedule, an argument), the batch layout and the devices."""
    t = cfg.train
    optimiser = (t.schedule, t.b1, t.b2, t.eps, t.grad_clip)  # (the weight decay is a schedule value)
    layout = (t.batch_size, plan.grad_accum, tuple(mesh.shape.items()), tuple(d.id for d in mesh.devices.flat))
    return (kind, repr(plan.model), plan.vocab_size, optimiser, layout, *extra)


def compiled(program_key: Hashable, build: Callable[[], Any]) -> tuple[Any, bool]:
    """The program for `program_key`, built by `build()` the first time; (program, was it cached)."""
    if program_key in _programs:
        _programs.move_to_end(program_key)
        return _programs[program_key], True
    program = build()
    _programs[program_key] = program
    while len(_programs) > MAX_PROGRAMS:
        _programs.popitem(last=False)
    return program, False


def clear() -> None:
    """Forget every program (tests use it to measure compilation)."""
    _programs.clear()
