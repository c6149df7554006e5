"""Fixtures of the integration tests: a real redis-server per test (see replay_support)."""

from tests.integration.replay_support import redis_server, run_name  # noqa: F401  (pytest finds fixtures here)
