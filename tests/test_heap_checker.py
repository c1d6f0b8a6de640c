"""The CPU decode paths once more under glibc's heap checker: every frame
buffer on the heap it watches (no guard pages), so a write past a buffer
or a corrupted chunk header aborts the run (`MALLOC_CHECK_=3`; on glibc 2.34
and later the checker lives in `libc_malloc_debug.so.0`, preloaded).

Runs in a subprocess: the awkward-size path sweep of the pixel formats
swscale's SIMD converters write (4:2:0 limited and full range, 10-bit 4:2:0,
4:2:2, packed RGB: the ones that overran) and the frame-size-change tests.
"""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_buffer_contract_paths import PLAIN_MEMORY

TESTS = Path(__file__).resolve().parent
DEBUG_MALLOC = "libc_malloc_debug.so.0"


def _has_debug_malloc() -> bool:
    try:
        ctypes.CDLL(DEBUG_MALLOC)
        return True
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _has_debug_malloc(),
                    reason=f"glibc's {DEBUG_MALLOC} is not available")
def test_cpu_decoding_under_glibc_heap_checker():
    env = {**os.environ, "MALLOC_CHECK_": "3", "LD_PRELOAD": DEBUG_MALLOC, PLAIN_MEMORY: "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
               str(TESTS / "test_buffer_contract_paths.py"),
               "-k", "guarded_buffers and (yuv420p or yuvj420p or yuv422p or packed)",
               str(TESTS / "test_size_changes.py")]
    done = subprocess.run(command, cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=900)
    tail = (done.stdout + done.stderr)[-3000:]
    assert done.returncode == 0, f"exit {done.returncode} under the heap checker:\n{tail}"
    assert " passed" in done.stdout and "failed" not in done.stdout, tail
