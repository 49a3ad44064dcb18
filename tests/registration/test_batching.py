"""``batch_size: auto``: the sizing rule on given numbers, and the CPU rule."""

import numpy as np
import pytest
import torch

from featreg.registration.batching import CPU_BATCH, auto_batch_size, largest_batch, pair_footprint_bytes
from featreg.registration.settings import RegistrationSettings

GiB = 2**30


@pytest.mark.parametrize(
    ("free", "per_pair", "kwargs", "expected"),
    [
        (80 * GiB, 3 * GiB, {}, 21),  # 64 GiB usable / 3 GiB
        (80 * GiB, 3 * GiB, {"headroom": 0.0}, 26),
        (80 * GiB, 3 * GiB, {"limit": 8}, 8),
        (2 * GiB, 3 * GiB, {}, 1),  # never below one pair: the job then fails as it would at batch 1
        (139 * GiB, 1 * GiB, {"headroom": 0.5}, 69),
    ],
)
def test_largest_batch_fills_free_memory_less_headroom(free, per_pair, kwargs, expected):
    assert largest_batch(free, per_pair, **kwargs) == expected


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((GiB, 0), {}, "per_pair_bytes > 0, got 1073741824 and 0"),
        ((-1, GiB), {}, "free_bytes must be >= 0"),
        ((GiB, GiB), {"headroom": 1.0}, r"headroom must be in \[0, 1\), got 1.0"),
        ((GiB, GiB), {"limit": 0}, "limit must be at least 1, got 0"),
    ],
)
def test_largest_batch_rejects_bad_numbers(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        largest_batch(*args, **kwargs)


def test_auto_on_cpu_is_the_fixed_cpu_batch_capped_by_the_pending_pairs():
    pair = np.zeros((1, 1, 16, 16), np.float32)
    settings = RegistrationSettings(lattice=(4, 4), iterations=2)
    cpu = torch.device("cpu")
    for pending, expected in ((3, 3), (50, CPU_BATCH)):
        batch, record = auto_batch_size(pair, pair, settings, spacing=(1, 1), encoder=None, device=cpu, limit=pending)
        assert batch == expected and record == {"requested": "auto", "batch_size": expected, "rule": f"fixed {CPU_BATCH} on cpu"}
    with pytest.raises(ValueError, match="measured on a CUDA device, got cpu"):
        pair_footprint_bytes(pair, pair, settings, spacing=(1, 1), encoder=None, device=cpu)
