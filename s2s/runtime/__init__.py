"""What this machine can do, read at run time (development VMs and users' machines
differ): bf16 instructions on the CPU, bf16 on the GPU, a compiler for torch.compile.
The lowest level of the package: it imports nothing of s2s but its errors."""

from __future__ import annotations

import ctypes
import functools
import os
import re
import shutil
import sys
from pathlib import Path

import torch

from s2s.errors import ConfigError

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU lists bf16 instructions (avx512_bf16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(re.search(rf"\b{flag}\b", flags) for flag in BF16_FLAGS)


def bf16_available(device: torch.device) -> bool:
    """Whether bf16 arithmetic runs at hardware speed on ``device``."""
    if device.type == "cuda":
        # not counting emulation: bf16 would be slower than fp32 there (pre-Ampere GPUs)
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and cpu_has_bf16()


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 where the hardware has it, else fp32; other names unchanged."""
    if precision != "auto":
        return precision
    return "bf16" if bf16_available(device) else "fp32"


def compile_unavailable(device: torch.device) -> str | None:
    """Why torch.compile cannot run on ``device`` here (None: it can)."""
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton is not installed"
    if device.type != "cpu":
        return f"no compiled kernels for device {device.type}"
    compilers = [os.environ.get("CXX", ""), "g++", "clang++"]
    if not any(c and shutil.which(c) for c in compilers):
        return "no C++ compiler found (set CXX or install g++)"
    return None


def fast_float32(device: torch.device) -> None:
    """On CUDA, float32 matrix multiplies and convolutions in TF32 (Ampere and later):
    PyTorch leaves them off by default; mixed precision makes most products bf16 anyway."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


# bytes: blocks this large come from mmap and go back when freed. 16 MB, not 4: the
# 8 MB tensors of every update (the output layer's weight in bf16, its gradient, a
# chunk of logits) then stay in the heap instead of being faulted in afresh each time
# (docs/speed.md, fourteenth session: 15-25% faster training; ``HeapTrimmer`` keeps the
# heap from growing with the freed blocks of many sizes that it now holds).
LARGE_BLOCK = 16 << 20


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far, in MB (None where the platform does
    not report it): logged with each training window, so a run shows when it grew."""
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024  # bytes on macOS


KERNEL_CACHE = 128  # oneDNN kernels kept (its default: 1,024)
# PyTorch's own cache of its bf16 matrix-multiply kernels (ideep, its default: 1,024)
MATMUL_CACHE = 32


def cap_kernel_cache(capacity: int = KERNEL_CACHE, matmuls: int = MATMUL_CACHE) -> None:
    """oneDNN (PyTorch's CPU matrix-multiply and LSTM library) builds and keeps a kernel
    for each problem shape, up to 1,024 of them, and PyTorch keeps a second cache of its
    bf16 matrix multiplies (about 0.26 MB each, also up to 1,024). A training run's
    batches come in many shapes (about 280 new ones in its first 200 updates), so both
    grew resident memory over a run (docs/speed.md, memory and sixteenth session):
    ``capacity`` and ``matmuls`` keep the most recently used ones; a miss in the second
    is served by the first. Read when the first kernel is built, so this is called before
    any; values the user set (ONEDNN_PRIMITIVE_CACHE_CAPACITY, LRU_CACHE_CAPACITY) are
    kept, but not an LRU_CACHE_CAPACITY that is not a positive whole number: PyTorch
    2.13 crashes (segmentation fault) on 0."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(capacity))
    value = os.environ.setdefault("LRU_CACHE_CAPACITY", str(matmuls))
    if not value.strip().isdigit() or int(value) < 1:
        raise ConfigError(
            f"LRU_CACHE_CAPACITY={value!r}: PyTorch's matrix-multiply kernel cache needs a "
            "positive whole number (0 crashes it); unset it to use s2s's "
            f"{MATMUL_CACHE}"
        )


@functools.cache
def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def trim_heap() -> bool:
    """With glibc: give the heap's free pages back to the system (``malloc_trim``).
    False where the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def resident_mb() -> float | None:
    """This process's resident memory now, in MB (Linux; None elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


TRIM_SLACK_MB = 32


class HeapTrimmer:
    """Called after each training update: trims the heap (``trim_heap``) once resident
    memory has grown more than ``slack_mb`` above where it settled after the last trim.
    With LARGE_BLOCK at 16 MB the heap keeps freed blocks of many sizes, and over 1,000
    updates of the default config they added about 300 MB; trimming at every update
    would fault the freed pages in again each time (docs/speed.md, fourteenth session).
    The first update after a trim sets the level (its own blocks faulted in again)."""

    def __init__(self, slack_mb: float = TRIM_SLACK_MB):
        self.slack_mb, self.level, self.trims = slack_mb, None, 0

    def __call__(self) -> bool:
        rss = resident_mb()
        if rss is None:
            return False
        if self.level is None:
            self.level = rss
            return False
        if rss <= self.level + self.slack_mb or not trim_heap():
            return False
        self.level, self.trims = None, self.trims + 1
        return True


@functools.lru_cache(maxsize=1)
def return_large_blocks(threshold: int = LARGE_BLOCK) -> bool:
    """With glibc: blocks of ``threshold`` bytes or more come from mmap and go back to the
    system when freed. glibc's own threshold rises (up to 32 MB) as such blocks are freed,
    after which the batch-sized tensors of a training run, all of different sizes, stay in
    the heap and fragment it (docs/speed.md, memory). False where the C library is not
    glibc (nothing changed)."""
    libc = _glibc()
    if libc is None:
        return False
    m_mmap_threshold = -3  # malloc.h
    return bool(libc.mallopt(m_mmap_threshold, threshold))
