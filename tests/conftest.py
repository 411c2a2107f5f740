import os

# Triton kernels run on CPU tensors through the interpreter; it must be set before triton is
# imported anywhere.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread. The paper models in tests are tiny: a second OpenMP
    thread only adds wake-ups, which on a loaded 2-core machine made training tests ~20x
    slower (84 s vs 4 s wall)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
