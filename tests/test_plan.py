"""The run plan: micro-batches chosen for the backend."""

from __future__ import annotations

import pytest

from scaling.config import ModelConfig
from scaling.planning.plan import micro_batches


@pytest.mark.parametrize(
    ("requested", "batch", "d_model", "seq_len", "devices", "backend", "expected"),
    [
        (None, 16, 256, 256, 1, "cpu", 8),  # 2 x 256 = 512 tokens per micro-batch
        (None, 8, 512, 512, 1, "cpu", 8),  # one 512-token sequence each
        (None, 16, 256, 256, 2, "cpu", 4),  # per device: 8 sequences -> 4 x 2
        (None, 16, 256, 64, 1, "cpu", 2),  # 8 x 64 = 512 tokens
        (None, 6, 256, 100, 1, "cpu", 1),  # 600 tokens in all: splitting would go below 512
        (None, 16, 32, 256, 1, "cpu", 1),  # too narrow to gain
        (None, 16, 256, 256, 3, "cpu", 1),  # does not split over the devices (validation says so)
        (None, 16, 256, 256, 1, "gpu", 1),  # accelerators: the whole batch
        (3, 12, 256, 256, 1, "gpu", 3),  # an explicit value is kept
    ],
)
def test_micro_batches_are_chosen_for_the_backend(requested, batch, d_model, seq_len, devices, backend, expected):
    model = ModelConfig(d_model=d_model, n_layers=2, n_heads=2, seq_len=seq_len)
    assert micro_batches(requested, batch, model, devices, backend) == expected
