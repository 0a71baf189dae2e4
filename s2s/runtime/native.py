"""Small C kernels, built on this machine at first use and kept in a cache.

A kernel is one C file of the package with no dependency but libc, libm and OpenMP. It
is compiled with the C compiler found here (``$CC``, else gcc, cc or clang) for this CPU
(``-march=native``), once per source, compiler and CPU, into
``$S2S_CACHE_DIR/native`` (default ``~/.cache/s2s/native``), and loaded after torch, so
that its OpenMP threads are torch's own. Where there is no compiler, the build fails or
``S2S_NATIVE=0`` is set, ``load`` returns None and callers keep their PyTorch path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch  # noqa: F401  (loaded first: its OpenMP runtime is the one a kernel uses)

log = logging.getLogger(__name__)

FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp"]
FLAGS += ["-shared", "-fPIC"]
HEADER = Path(__file__).with_name("native_math.h")  # shared by the kernels: -I this folder


def compiler() -> str | None:
    """The C compiler to build kernels with, or None."""
    for name in (os.environ.get("CC", ""), "gcc", "cc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def cache_dir() -> Path:
    root = os.environ.get("S2S_CACHE_DIR")
    if root:
        return Path(root) / "native"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "s2s" / "native"


def _cpu_key() -> str:
    """What ``-march=native`` depends on: the CPU's feature flags."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


@functools.cache
def load(source: Path) -> ctypes.CDLL | None:
    """The shared library built from ``source`` (cached), or None where it cannot be."""
    if os.environ.get("S2S_NATIVE", "1") == "0":
        return None
    cc = compiler()
    if cc is None:
        log.debug("no C compiler found: %s not built", source.name)
        return None
    code = source.read_bytes() + HEADER.read_bytes()
    key = hashlib.sha256(b"\0".join([code, cc.encode(), " ".join(FLAGS).encode()]))
    key.update(_cpu_key().encode())
    target = cache_dir() / f"{source.stem}-{key.hexdigest()[:16]}.so"
    try:
        if not target.exists():
            _build(cc, source, target)
        return ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as err:
        said = (getattr(err, "stderr", None) or b"").decode(errors="replace").strip()
        detail = f"{err}: {said.splitlines()[0]}" if said else str(err)
        log.info("%s not built (%s): PyTorch's path is used", source.name, detail)
        return None


def _build(cc: str, source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # built beside its final name and renamed: processes building at once never load
    # a half-written file
    fd, scratch = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run(
            [cc, *FLAGS, "-I", str(HEADER.parent), "-o", scratch, str(source), "-lm"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        os.replace(scratch, target)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)


def checked(kernel, agrees: Callable[[Any], bool], what: str):
    """``kernel``, or None where it is None or ``agrees(kernel)`` is false (said once in
    a warning): each kernel is checked against its PyTorch path once per process."""
    if kernel is not None and not agrees(kernel):
        log.warning("the native %s kernel disagrees with PyTorch's: not used", what)
        return None
    return kernel


def function(source: Path, name: str, argtypes: list, restype=ctypes.c_int):
    """The C function ``name`` of the library built from ``source``, its argument and
    result types set; None where the library is not built."""
    lib = load(source)
    if lib is None:
        return None
    fn = getattr(lib, name)
    fn.restype, fn.argtypes = restype, argtypes
    return fn


def kernel(source: Path, name: str, argtypes: list, agrees: Callable[[Any], bool], what: str):
    """``(built, checked)`` for the C function ``name`` of ``source``: ``built()`` is the
    function as built, unchecked (None where it is not built); ``checked()`` is it where
    it also passes ``agrees`` (see ``checked``), computed once per process
    (``checked.cache_clear()`` forgets), else None."""

    def built():
        return function(source, name, argtypes)

    @functools.cache
    def checked_once():
        return checked(built(), agrees, what)

    return built, checked_once
