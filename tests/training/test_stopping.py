"""The stopping rule: measures of the held-out loss in, the learning rate and when to stop out."""

from __future__ import annotations

import pytest

from bot.training.stopping import MAX_EPOCHS, NO_HELDOUT, PLATEAU, TIME_BUDGET, StoppingRule


def run(rule: StoppingRule, losses, seconds_per_step: float = 0.0):
    """Feed `losses` (a function of the step) to the rule as training would; return the verdicts by step."""
    verdicts, step = {}, 0
    while True:
        step += 1
        if rule.should_measure(step):
            verdicts[step] = rule.observe(step, losses(step), step * seconds_per_step)
            if verdicts[step].stop:
                return step, verdicts
        assert step < 10_000, "never stopped"


def test_measures_several_times_a_pass_at_full_rate_while_improving():
    rule = StoppingRule(steps_per_epoch=100, max_epochs=4)
    assert rule.eval_every == 25
    assert [rule.should_measure(s) for s in (24, 25, 50, 51)] == [False, True, True, False]
    assert rule.lr_factor(0) == rule.lr_factor(200) == 1.0


def test_improving_all_the_way_runs_to_the_budget_and_cools_down_at_its_end():
    rule = StoppingRule(steps_per_epoch=100, max_epochs=4, cooldown_fraction=0.25)
    last, verdicts = run(rule, lambda step: 5.0 / step)  # always 1% better or more
    assert last == 400 and rule.reason == MAX_EPOCHS
    assert rule.best_step == 400 and verdicts[400].is_best
    assert rule.cooldown_start == 320  # the latest start that ends on the budget: 320 + 0.25 * 320 = 400
    assert rule.lr_factor(319) == 1.0 and rule.lr_factor(360) == pytest.approx(0.5) and rule.lr_factor(399) < 0.05


def test_a_plateau_restores_the_best_weights_cools_down_and_stops():
    rule = StoppingRule(steps_per_epoch=100, max_epochs=4, patience=2, cooldown_fraction=0.2)
    curve = {25: 4.0, 50: 3.5, 75: 3.49, 100: 3.6}  # progress, then two measures without 1% progress
    last, verdicts = run(rule, lambda step: curve.get(step, 3.3))
    assert rule.reason == PLATEAU
    assert verdicts[100].restore_best and not verdicts[100].is_best  # step 100 was worse: back to step 75
    assert (rule.cooldown_start, rule.cooldown_end) == (100, 125)  # a fifth of the steps so far, at least one measure
    assert rule.lr_factor(99) == 1.0 and rule.lr_factor(100) == 1.0 and rule.lr_factor(124) == pytest.approx(0.04)
    assert last == 125 and rule.best_step == 125 and rule.best_loss == 3.3  # the cool-down found the lowest loss


def test_small_gains_are_not_progress():
    rule = StoppingRule(steps_per_epoch=100, max_epochs=4, min_improvement=0.01, patience=2)
    last, _ = run(rule, lambda step: 4.0 - 0.001 * step)  # 0.1% better each measure, for ever
    assert rule.reason == PLATEAU and rule.cooldown_start == 75 and last == 100  # 2 measures after the first
    assert rule.best_step == last  # each small gain is still the best so far, and kept


def test_a_slow_steady_fall_is_progress_and_a_fall_of_a_percent_is_not():
    """Real text keeps falling by a few percent a measure for passes: by default that is learning, not a
    plateau (a pass gaining about a tenth is worth its time), while 1% a measure is."""
    falling = {0.03: (4, MAX_EPOCHS), 0.01: (1, PLATEAU)}  # 1%: a plateau at step 75, a cool-down to 100
    for share, (passes, reason) in falling.items():
        rule = StoppingRule(steps_per_epoch=100, max_epochs=4)
        last, _ = run(rule, lambda step: 3.8 * (1 - share) ** (step // 25))
        assert (last / 100, rule.reason) == (passes, reason), share


def test_getting_worse_stops_and_keeps_the_best_measure():
    rule = StoppingRule(steps_per_epoch=40, max_epochs=8, patience=2)
    last, verdicts = run(rule, lambda step: abs(step - 40) / 40 + 2.0)  # best at step 40, then overfitting
    assert rule.reason == PLATEAU and rule.best_step == 40 and rule.best_loss == 2.0
    assert verdicts[60].restore_best
    assert last < 80


def test_the_time_budget_stops_at_once():
    rule = StoppingRule(steps_per_epoch=100, max_epochs=4, max_seconds=30.0)
    last, verdicts = run(rule, lambda step: 5.0 / step, seconds_per_step=0.5)
    assert rule.reason == TIME_BUDGET and last == 75  # the first measure at or past 30 s
    assert verdicts[75].stop and verdicts[75].is_best


def test_no_held_out_posts_means_one_pass_with_its_cool_down():
    rule = StoppingRule(steps_per_epoch=50, max_epochs=4, has_heldout=False, cooldown_fraction=0.25)
    last, verdicts = run(rule, lambda step: None)
    assert last == 50 and rule.reason == NO_HELDOUT and rule.best_step == 50
    assert rule.lr_factor(39) == 1.0 and rule.lr_factor(45) == pytest.approx(0.5)


def test_a_loss_that_is_not_a_number_is_never_the_best():
    rule = StoppingRule(steps_per_epoch=8, max_epochs=2, evals_per_epoch=8, patience=2)
    last, _ = run(rule, lambda step: 3.0 if step == 1 else float("nan"))
    assert rule.best_step == 1 and rule.reason == PLATEAU


@pytest.mark.parametrize("steps_per_epoch, evals", [(1, 4), (3, 4), (7, 100), (1000, 1)])
def test_any_size_ends_within_the_budget(steps_per_epoch, evals):
    rule = StoppingRule(steps_per_epoch=steps_per_epoch, max_epochs=2, evals_per_epoch=evals)
    last, _ = run(rule, lambda step: 10.0 / step)
    assert last <= 2 * steps_per_epoch and rule.reason == MAX_EPOCHS
