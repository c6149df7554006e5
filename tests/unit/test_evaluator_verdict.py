"""The end-of-run verdict: planning "clearly beats" a random policy only when both spreads are apart; how many
environments an evaluation plays at once."""

import pytest

from actors.evaluator import EVAL_ENVS, describe, eval_envs, verdict


def result(plan, plan_std, rand, rand_std):
    return {"return_mean": plan, "return_std": plan_std, "random_return_mean": rand, "random_return_std": rand_std}


@pytest.mark.parametrize("figures, opening", [
    ((60.0, 10.0, 15.0, 5.0), "planning clearly beats the random policy: 4.0x"),
    ((30.0, 10.0, 15.0, 5.0), "planning is ahead of the random policy but within the spreads (2.0x"),
    ((22.0, 1.0, 15.0, 5.0), "planning clearly beats"),       # 22 - 1 > 15 + 5
    ((20.0, 0.0, 15.0, 5.0), "planning is ahead"),            # touching spreads are not apart
    ((10.0, 2.0, 15.0, 5.0), "planning is not better than the random policy yet (0.7x"),
    ((3.0, 1.0, 0.0, 0.0), "planning clearly beats the random policy: +3.0 over random"),  # a random return of 0
])
def test_verdict(figures, opening):
    assert verdict(result(*figures)).startswith(opening)


def test_describe_names_both_policies():
    assert describe(result(153.0, 1.3, 127.4, 44.5)) == "return 153.0 ± 1.3; random policy 127.4 ± 44.5"


@pytest.mark.parametrize("episodes, envs", [(1, 1), (3, 3), (5, 5), (6, 3), (7, 4), (10, 5), (11, 4), (12, 4), (20, 5)])
def test_eval_envs_play_the_episodes_in_the_fewest_even_rounds(episodes, envs):
    assert eval_envs(episodes) == envs
    rounds = -(-episodes // envs)
    assert envs <= EVAL_ENVS and rounds == -(-episodes // EVAL_ENVS)  # no more rounds than batches of EVAL_ENVS
    assert envs * rounds - episodes < rounds  # fewer spare episodes than rounds
