"""A job in which rank 1 raises while the others wait for it in a collective (launched by test_faults.py)."""

import time

import minigrad
import minigrad.distributed as dist

dist.init_process_group()
if dist.get_rank() == 1:
    print(f"raising at {time.time():.3f}", flush=True)  # start-up under load is not part of the limit
    raise RuntimeError("rank 1 fails on purpose")
dist.all_reduce(minigrad.ones(3))  # never completes: rank 1 does not take part
time.sleep(600)
