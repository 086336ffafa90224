"""Address-space limits (``RLIMIT_AS``) for the tests that prove memory is bounded.

What the libraries map differs by build: torch's CUDA build maps about 3 GiB of
shared libraries at import (cuBLAS, cuFFT, NCCL …) even on a machine without a
GPU, its CPU build about 0.6 GiB; neither is memory a run uses. So a limit that
means "the work may take this much" is the libraries' address space, measured
once on this install, plus that much. A run of the tests that would read a 2 GiB
member whole then fails the same way on either build.
"""

from __future__ import annotations

import functools
import subprocess
import sys

#: What measures the libraries: the address space of a process that imported what every run imports.
_MEASURE = (
    "import numpy, pyarrow, PIL.Image, torch\n"
    "for line in open('/proc/self/status'):\n"
    "    if line.startswith('VmSize:'):\n"
    "        print(int(line.split()[1]) * 1024)\n"
)


@functools.cache
def libraries_address_space() -> int:
    """Bytes of address space a fresh interpreter holds once numpy, pyarrow, PIL and torch are imported."""
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[0])


def address_space_for(work_bytes: int) -> int:
    """A limit that leaves ``work_bytes`` of address space for the work, on top of the libraries."""
    return libraries_address_space() + work_bytes
