"""Suite-wide settings: runs started by tests register their metrics endpoints in a private directory."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def orrery_home(tmp_path_factory):
    """ORRERY_HOME for the whole session (inherited by subprocesses), so tests never touch the user's ~/.orrery."""
    previous = os.environ.get("ORRERY_HOME")
    os.environ["ORRERY_HOME"] = str(tmp_path_factory.mktemp("orrery-home"))
    yield os.environ["ORRERY_HOME"]
    if previous is None:
        os.environ.pop("ORRERY_HOME", None)
    else:
        os.environ["ORRERY_HOME"] = previous
