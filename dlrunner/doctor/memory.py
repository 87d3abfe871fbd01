"""The memory check (CUDA only): peak memory of one step, the batch that would fit, and memory
that rises step after step (a leak)."""
from __future__ import annotations

import gc

import torch

from dlrunner.doctor.core import Exam, Finding


def memory(ex: Exam) -> Finding:
    f = Finding("memory", "Memory")
    if ex.device.type != "cuda":
        f.add("skip", f"on {ex.device.type}: device memory is measured on CUDA only")
        return f
    ex.reset()
    opt = ex.optimizer()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    ex.step(opt, ex.x, ex.y)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    per_sample = peak / len(ex.y)
    free, total = torch.cuda.mem_get_info()
    fits = int(max(1, (free * 0.8) // max(per_sample, 1)))
    f.details |= {"peak_bytes_per_batch": peak, "batch": len(ex.y), "free": free, "total": total,
                  "estimated_max_batch": fits}
    f.add("pass", f"peak {peak / 2**20:.1f} MiB for a batch of {len(ex.y)}; ~{fits} samples would fit "
                  f"in {free / 2**30:.1f} GiB free")
    allocated = []
    for _ in range(12):
        ex.step(opt, ex.x, ex.y)
        torch.cuda.synchronize()
        allocated.append(torch.cuda.memory_allocated())
    growth = allocated[-1] - allocated[2]
    rising = all(b >= a for a, b in zip(allocated[2:], allocated[3:])) and growth > 0
    f.details["allocated_per_step"] = allocated
    if rising:
        f.add("warn", f"allocated memory rises every step ({growth / 2**20:.2f} MiB over 10 steps): a leak",
              "do not keep tensors that hold the graph (accumulate loss.item(), not loss)")
    del opt
    gc.collect()
    torch.cuda.empty_cache()
    ex.reset()
    return f
