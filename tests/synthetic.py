"""A small pixel task driven by actions, for learning-sanity tests: a square moved by a 2-D action."""

from __future__ import annotations

import numpy as np

SIZE, SQUARE, SPEED = 64, 12, 6.0


def moving_square(batch: int, length: int, seed: int) -> dict[str, np.ndarray]:
    """(B, L) chunks in the replay batch layout: o_t (B, L, 64, 64, 3) uint8, a_tm1 (B, L, 2), r_tm1 (B, L).

    The square's corner moves by SPEED * a_tm1 each step (clipped to the frame); the reward is
    the square's closeness to the frame centre, so it depends on the state the action led to.
    """
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (batch, length, 2)).astype(np.float32)
    position = rng.uniform(0, SIZE - SQUARE, (batch, 2))
    frames = np.zeros((batch, length, SIZE, SIZE, 3), np.uint8)
    rewards = np.zeros((batch, length), np.float32)
    centre = (SIZE - SQUARE) / 2
    for t in range(length):
        position = np.clip(position + SPEED * actions[:, t], 0, SIZE - SQUARE)
        for b, (y, x) in enumerate(position.round().astype(int)):
            frames[b, t, y:y + SQUARE, x:x + SQUARE] = (255, 200, 60)
        rewards[:, t] = 1.0 - np.abs(position - centre).sum(-1) / SIZE
    return {"observations": frames, "actions": actions, "rewards": rewards}


def random_episode(run: str, index: int, steps: int, rng: np.random.Generator):
    """A cheetah-run-shaped episode of random 64x64x3 frames, actions (6,) and rewards: what replay benchmarks store."""
    from common.episode import Episode, EpisodeInfo

    info = EpisodeInfo(run=run, actor=0, seed=0, episode_id=f"{run}.e{index:05d}", policy_version=0,
                       task="cheetah-run", env_steps=4 * steps)
    return Episode(observations=rng.integers(0, 256, (steps + 1, 64, 64, 3), dtype=np.uint8),
                   actions=rng.uniform(-1, 1, (steps, 6)).astype(np.float32),
                   rewards=rng.normal(size=steps).astype(np.float32),
                   terminals=np.zeros(steps, bool), info=info)
