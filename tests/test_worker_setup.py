import subprocess
import sys

import pytest

SCRIPT = r"""
import numpy as np, psutil
from flowtie_dask.worker_setup import heap_free_bytes, release_free_heap, tune_malloc
assert tune_malloc()
proc = psutil.Process()
base = proc.memory_info().rss
blocks, pins = [], []
for _ in range(100):  # 100 × 4 MiB from the heap (below the mmap threshold), each touched, each followed by a
    blocks.append(np.ones(2**19))  # small block that stays: holes the heap's top trimming cannot give back
    pins.append(np.ones(2**11))
filled = proc.memory_info().rss
del blocks
kept = proc.memory_info().rss
free = heap_free_bytes()
assert free is None or free > 350 * 2**20, free
assert not release_free_heap(min_free=2**40) or free is None  # less free than asked: nothing done
untouched = proc.memory_info().rss
released = release_free_heap()
after = proc.memory_info().rss
print(released, (filled - base) / 2**20, (kept - base) / 2**20, (after - base) / 2**20, (untouched - base) / 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_heap_blocks_stay_resident_until_released():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    released, filled, kept, after, untouched = out.stdout.split()
    assert released == "True"
    filled, kept, after, untouched = float(filled), float(kept), float(after), float(untouched)
    assert untouched > 300
    assert filled > 350  # MiB: the blocks were resident
    assert kept > 300  # freed, below the trim threshold: still held by the process
    assert after < 50  # given back
