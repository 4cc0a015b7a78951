"""When a run has diverged: a rule on its logged train losses, so a run whose loss blew up is never
recorded as completed (its final loss would look like any other point in a scaling fit).

The rule, on the train loss at each logged step:
  - smoothed = the median of the last WINDOW logged losses (one unusual batch barely moves a median);
  - reference = the lower of the best smoothed loss so far and ln(vocab_size), the loss of guessing
    uniformly (a run that blew up before its first log never had a good best);
  - the run has diverged once smoothed > RATIO x reference for PATIENCE logged steps in a row, or
    when it ends still above (`finish`: a short run may not reach PATIENCE logs), and at once when a
    loss is not finite. The step recorded is the first logged step of that excursion.
Healthy runs stay well inside RATIO: on the tiny test corpus at lr 3e-3 to 0.3, logging every step,
the smoothed loss rose at most 6% above its best so far. An early excursion that recovers within
PATIENCE logs is forgiven (at lr 1 the tiny model rose 25% above ln(vocab) during warmup for 6 logs,
then trained to 4.2). The state is a pure function of the logged losses, so a resumed run rebuilds
it from metrics.parquet.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

WINDOW = 5
RATIO = 1.2
PATIENCE = 10


@dataclass(frozen=True)
class Divergence:
    step: int
    reason: str


class DivergenceMonitor:
    """Feed it each logged train loss in order; `verdict` is set once the run has diverged."""

    def __init__(self, vocab_size: int):
        self.chance = math.log(vocab_size)
        self.recent: deque[float] = deque(maxlen=WINDOW)
        self.best = math.inf
        self.excursion: list[int] = []  # logged steps in a row with the smoothed loss above the limit
        self.verdict: Divergence | None = None

    def add(self, step: int, loss: float) -> Divergence | None:
        """Record one logged loss; returns the verdict (None while the run is healthy)."""
        if self.verdict is not None:
            return self.verdict
        if not math.isfinite(loss):
            self.verdict = Divergence(step, f"the train loss at step {step} is {loss}")
            return self.verdict
        self.recent.append(loss)
        smoothed = statistics.median(self.recent)
        reference = min(self.best, self.chance)
        self.excursion = self.excursion + [step] if smoothed > RATIO * reference else []
        if len(self.excursion) >= PATIENCE:
            self.verdict = Divergence(
                self.excursion[0],
                f"the smoothed train loss stayed above {RATIO:g} x {reference:.4g} (its best, or ln(vocab)) from step "
                f"{self.excursion[0]} to {step}, reaching {smoothed:.4g}",
            )
        self.best = min(self.best, smoothed)
        return self.verdict

    def finish(self) -> Divergence | None:
        """At the end of training: a run that ends above its limit never recovered."""
        if self.verdict is None and self.excursion:
            self.verdict = Divergence(
                self.excursion[0],
                f"the smoothed train loss ended above {RATIO:g} x its best "
                f"(or ln(vocab)), from step {self.excursion[0]} on",
            )
        return self.verdict


def first_divergence(steps: Iterable[int], losses: Iterable[float], vocab_size: int) -> Divergence | None:
    """The rule applied to a whole curve of logged (step, train loss)."""
    monitor = DivergenceMonitor(vocab_size)
    for step, loss in zip(steps, losses):
        if monitor.add(int(step), float(loss)) is not None:
            return monitor.verdict
    return monitor.finish()
