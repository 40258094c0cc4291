"""When to stop fine-tuning, and the learning rate on the way: one rule for every dataset.

    >>> rule = StoppingRule(steps_per_epoch=100, max_epochs=4)
    >>> rule.eval_every, rule.lr_factor(10)
    (25, 1.0)
    >>> rule.observe(step=25, loss=3.1, seconds=2.0).is_best
    True

How much a person's posts can teach a model differs by orders of magnitude (300 posts or 3,200;
a pretrained base or a random one), so no fixed number of passes is right for all. The held-out
loss says when the style is learned:

1. Warm-up-stable-decay: the learning rate stays at its peak while the model learns, and falls
   linearly to zero over a short cool-down at the end. A schedule that does not need to know the
   length of training in advance, and the cool-down still gives most of what a full decay gives.
2. The held-out loss is measured `evals_per_epoch` times per pass. A measure that beats the best so
   far by at least `min_improvement` (relative) is progress; after `patience` measures without
   progress, the style is learned: the best weights are restored and the cool-down begins.
3. The cool-down lasts `cooldown_fraction` of the steps taken so far (at least one measure apart),
   then training stops. Budgets end it the same way: the cool-down is planned to end at
   `max_epochs` passes; a time budget stops at once.
4. The weights kept are those of the lowest held-out loss measured, wherever it was.
5. With no held-out posts nothing can be measured: one pass, with the cool-down at its end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Why training stopped, as run.json says it; the card's and the CLI's words for each are REASONS.
from bot.publishing.facts import MAX_EPOCHS, NO_HELDOUT, PLATEAU, TIME_BUDGET
from bot.publishing.facts import STOP_REASONS as REASONS  # noqa: F401 - read here by the CLI and the tests


@dataclass
class Verdict:
    """What one measure means: a new best (keep these weights), restore the best, and/or stop."""

    is_best: bool = False
    restore_best: bool = False
    stop: bool = False


@dataclass
class StoppingRule:
    steps_per_epoch: int
    max_epochs: int
    evals_per_epoch: int = 4
    min_improvement: float = 0.025
    patience: int = 2
    cooldown_fraction: float = 0.2
    max_seconds: float | None = None
    has_heldout: bool = True
    best_loss: float | None = None
    best_step: int = 0
    reason: str | None = None
    cooldown_start: int | None = None
    cooldown_end: int | None = None
    measures_without_progress: int = 0

    def __post_init__(self) -> None:
        self.eval_every = max(1, math.ceil(self.steps_per_epoch / self.evals_per_epoch))
        passes = self.max_epochs if self.has_heldout else 1
        self.max_steps = max(1, self.steps_per_epoch * passes)
        # The latest start of a cool-down that still ends within the budget of passes.
        self.planned_cooldown = math.floor(self.max_steps / (1 + self.cooldown_fraction))
        if not self.has_heldout:
            self.reason = NO_HELDOUT

    @property
    def cooling(self) -> bool:
        return self.cooldown_start is not None

    def lr_factor(self, step: int) -> float:
        """The share of the peak learning rate for the step about to be taken (0-based)."""
        start = self.cooldown_start if self.cooling else self.planned_cooldown
        end = self.cooldown_end if self.cooling else self.max_steps
        if step < start:
            return 1.0
        return max(0.0, (end - step) / max(1, end - start))

    def should_measure(self, step: int) -> bool:
        """Measure after `step` steps: every `eval_every` steps, and at the last step."""
        return step % self.eval_every == 0 or step >= self.last_step

    @property
    def last_step(self) -> int:
        return self.cooldown_end if self.cooling else self.max_steps

    def observe(self, step: int, loss: float | None, seconds: float) -> Verdict:
        """Take the held-out loss after `step` steps (None when nothing is held out)."""
        verdict = Verdict()
        if loss is not None and math.isfinite(loss):
            if self.best_loss is None or loss < self.best_loss:
                progress = self.best_loss is None or loss < self.best_loss * (1 - self.min_improvement)
                self.best_loss, self.best_step, verdict.is_best = loss, step, True
                if progress:
                    self.measures_without_progress = 0
                else:
                    self.measures_without_progress += 1
            else:
                self.measures_without_progress += 1
        elif loss is not None:  # not a number: the run has diverged, which is no progress
            self.measures_without_progress += 1
        elif not self.has_heldout:
            self.best_step, verdict.is_best = step, True  # nothing to compare: the latest is kept
        if self.max_seconds is not None and seconds >= self.max_seconds and step < self.last_step:
            self.reason, verdict.stop = TIME_BUDGET, True
            return verdict
        if step >= self.last_step:
            self.reason = self.reason or MAX_EPOCHS
            verdict.stop = True
            return verdict
        if not self.cooling:
            if step >= self.planned_cooldown:  # the budget's cool-down has begun (see lr_factor)
                self.reason = self.reason or MAX_EPOCHS
                self.cooldown_start, self.cooldown_end = self.planned_cooldown, self.max_steps
            elif self.has_heldout and self.measures_without_progress >= self.patience:
                self.reason = PLATEAU
                verdict.restore_best = not verdict.is_best
                length = max(self.eval_every, round(self.cooldown_fraction * step))
                self.cooldown_start, self.cooldown_end = step, min(step + length, self.max_steps)
        return verdict
