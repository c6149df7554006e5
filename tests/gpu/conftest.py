"""GPU tests (marker ``gpu``): run where CUDA is usable, skipped with the reason everywhere else.

    python -m pytest tests/gpu            # on a GPU machine (about 2 minutes on an H200)
    python -m pytest -m "not gpu"         # everything else

CI machines have no GPU, so these tests are collected and skipped there (the suite stays green);
the reason printed says why (a CPU build of torch, or no usable device).
"""

import pytest

from common.device import cuda_unusable_reason


def pytest_collection_modifyitems(config, items):
    reason = cuda_unusable_reason()
    for item in items:
        if "tests/gpu/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.gpu)
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=f"needs a usable CUDA GPU: {reason}"))
