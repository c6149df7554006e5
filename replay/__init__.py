"""The Redis sequence replay: embedded server, episode writer, chunk sampler, eviction, limiter."""
