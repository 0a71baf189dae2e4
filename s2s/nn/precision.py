"""Which dtype a recurrent layer runs in under mixed precision, decided by one plain
function of the device, the autocast dtype, the input's form and the hardware.

Measured, not assumed (``scripts/bench_rnn_precision.py``): on a CPU with bf16
instructions (avx512_bf16 or AMX) oneDNN's fused LSTM runs padded input in bfloat16
about 2.3x faster than float32, forward and backward; packed input it runs in float32
whatever autocast asks; on CPUs without bf16 instructions its bfloat16 kernel fails.
On CUDA, PyTorch's cuDNN RNN autocast wrapper casts to float16 whatever the autocast
dtype, so under bf16 autocast a fused layer would run in fp16 with no loss scaling:
there it runs in float32 until bf16 recurrence is measured on a GPU. A step-loop layer
(``LoopRNN``: peephole, layer-normalised and multiplicative cells) runs its matrix
products as autocast gives them, in bf16 where the CPU has it (its gates and state stay
float32): the multiplicative LSTM's training step 2.4x faster (docs/speed.md).
"""

from __future__ import annotations

import torch

from s2s.runtime import cpu_has_bf16

__all__ = ["autocast_dtype", "cpu_has_bf16", "recurrent_dtype"]


def autocast_dtype(device: str) -> torch.dtype | None:
    """The dtype autocast computes in on ``device`` ("cpu", "cuda", ...), or None when
    autocast is off there (or the device has none)."""
    if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return None


def recurrent_dtype(
    device: str, autocast: torch.dtype | None, *, fused: bool, packed: bool, cpu_bf16: bool
) -> torch.dtype | None:
    """The dtype a recurrent layer computes in: None means as the surrounding autocast
    (or its absence) gives, float32 means autocast off for this layer."""
    if autocast is None:
        return None
    if device == "cuda":
        return None if autocast == torch.float16 else torch.float32
    # a step loop pads packed input itself; its products run as autocast says
    fast = autocast == torch.bfloat16 and cpu_bf16 and (not fused or not packed)
    return None if fast else torch.float32
