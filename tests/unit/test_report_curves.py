"""The numbers behind `orrery report`'s curves: smoothing, counter rates, repeated logs, the band over seeds."""

import numpy as np

from cluster.report import last_per_x, rate, seed_band, smooth


def test_smooth_is_a_trailing_mean_that_starts_short():
    np.testing.assert_allclose(smooth(np.array([0.0, 3.0, 6.0, 9.0]), 3), [0.0, 1.5, 3.0, 6.0])
    np.testing.assert_allclose(smooth(np.array([4.0, 1.0]), 1), [4.0, 1.0])


def test_rate_of_a_steady_counter_starts_one_window_in_and_never_goes_negative():
    times = np.arange(0.0, 20.0)  # a record a second
    counter = 10.0 * times  # 10 per second
    at, per_s = rate(times, counter, window_s=3.0)
    assert at[0] == 3.0 and len(at) == 17
    np.testing.assert_allclose(per_s, 10.0)
    counter[12:] -= 50  # a learner restored from an older checkpoint
    assert rate(times, counter, window_s=3.0)[1].min() == 0.0


def test_last_per_x_keeps_the_last_value_logged_at_each_x():
    x, y = last_per_x(np.array([2.0, 1.0, 2.0, 3.0]), np.array([20.0, 10.0, 21.0, 30.0]))
    np.testing.assert_array_equal(x, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(y, [10.0, 21.0, 30.0])
    assert [len(a) for a in last_per_x(np.array([]), np.array([]))] == [0, 0]


def test_seed_band_is_mean_and_std_over_the_range_every_seed_reached():
    first = (np.array([0.0, 100.0]), np.array([0.0, 100.0]))  # y = x
    second = (np.array([50.0, 150.0]), np.array([52.0, 152.0]))  # y = x + 2
    grid, mean, std = seed_band([first, second], points=11)
    assert (grid[0], grid[-1]) == (50.0, 100.0)
    np.testing.assert_allclose(mean, grid + 1)
    np.testing.assert_allclose(std, 1.0)
    assert seed_band([first]) is None
    assert seed_band([first, (np.array([200.0, 300.0]), np.array([0.0, 1.0]))]) is None


def fake_run(name, task, evaluations, start=1000.0):
    """A Run as load_run reads it: a first record at ``start``, then (env_steps, mean, std, time) evaluations."""
    from cluster.report import Run
    records = [{"time": start, "env_steps": 0}] + [
        {"time": t, "env_steps": steps, "eval/return_mean": mean, "eval/return_std": std,
         "eval/random_return_mean": 10.0, "eval/random_return_std": 2.0} for steps, mean, std, t in evaluations]
    return Run(name=name, path=None, task=task, seed=0, records=records, summary=None, bad_lines=0)


def test_results_table_reads_each_task_at_100k_env_steps_against_planet():
    from cluster.report import results_table
    one = fake_run("a", "dmc:cheetah-run", [(50_000, 90.0, 5.0, 2000.0), (100_040, 150.0, 12.0, 4600.0)])
    seeds = [fake_run("b", "dmc:cartpole-swingup", [(100_000, 280.0, 9.0, 3400.0)]),
             fake_run("c", "dmc:cartpole-swingup", [(100_000, 300.0, 9.0, 3700.0)])]
    other = fake_run("d", "atari:MsPacman", [(90_000, 500.0, 50.0, 1600.0)])
    lines = results_table([one, *seeds, other]).splitlines()
    assert lines[0].startswith("| task | PlaNet @100 episodes | Orrery @100 episodes |") and len(lines) == 5
    assert lines[2] == "| dmc:cheetah-run | 138 | 150.0 ± 12.0 (above) | 10.0 ± 2.0 | 1 h 00 min | 100,040 | 1 |"
    assert lines[3] == "| dmc:cartpole-swingup | 297 | 290.0 ± 10.0 (below) | 10.0 ± 0.0 | 40 min 00 s, 45 min 00 s | 100,000 | 2 |"
    assert lines[4] == "| atari:MsPacman | — | 500.0 ± 50.0 | 10.0 ± 2.0 | 10 min 00 s | 90,000 | 1 |"
