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
