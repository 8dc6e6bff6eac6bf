"""Memory read bandwidth of this machine, the ceiling of CPU token generation.

Generating one token reads every weight once (all but the token-embedding
table, of which one row is read), so tokens/s can never exceed read
bandwidth / weight bytes.  Measured with numpy over arrays far larger than any
cache: the best of a few kernels (``sum`` of float32, a float32 ``dot`` with
itself, which reads the array once, an OR-reduction of uint64, glibc ``memchr``
for an absent byte) and of a few repeats, in 1
process and in N processes at once (each reading its own array; the
aggregate is the total bytes over the slowest process's time).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import time
from typing import Any

import numpy as np

__all__ = ["read_bandwidth", "weight_bytes_per_token"]

ARRAY_BYTES = 512 * 2**20


def _kernels(buf: np.ndarray[Any, Any]) -> list[tuple[str, Any]]:
    f32 = buf.view(np.float32)
    u64 = buf.view(np.uint64)
    libc = ctypes.CDLL(None)
    libc.memchr.restype = ctypes.c_void_p
    libc.memchr.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    address, size = buf.ctypes.data, buf.nbytes
    return [("sum f32", lambda: f32.sum()), ("dot f32", lambda: np.dot(f32, f32)),
            ("bitwise_or.reduce u64", lambda: np.bitwise_or.reduce(u64)),
            # glibc's vectorised memchr for a byte that is not there (1.0 is 00..00 F0 3F): a plain streaming read
            ("memchr", lambda: libc.memchr(address, 0xAB, size))]


def _one_process(start: Any, repeats: int, array_bytes: int, out: Any) -> None:
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # too late for an already loaded BLAS; the parent sets it as well
    buf = np.ones(array_bytes // 8, dtype=np.float64).view(np.uint8)
    best: dict[str, float] = {}
    start.wait()
    for _ in range(repeats):
        for name, kernel in _kernels(buf):
            began = time.perf_counter()
            kernel()
            seconds = time.perf_counter() - began
            best[name] = min(best.get(name, float("inf")), seconds)
    out.put(best)


def read_bandwidth(processes: int, repeats: int = 5, array_bytes: int = ARRAY_BYTES) -> dict[str, Any]:
    """Bytes/s read by ``processes`` processes at once: the best kernel's aggregate, with every kernel's figure."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    ctx = mp.get_context("fork")
    start, out = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_one_process, args=(start, repeats, array_bytes, out)) for _ in range(processes)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    per_kernel = {name: processes * array_bytes / max(r[name] for r in results) for name in results[0]}
    best = max(per_kernel, key=lambda k: per_kernel[k])
    return {"processes": processes, "bytes_per_s": per_kernel[best], "kernel": best, "per_kernel": per_kernel}


def weight_bytes_per_token(path: str) -> dict[str, int]:
    """Bytes of weights read to generate one token: all tensors but ``token_embd`` (one row of it is read)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    total = sum(int(t.n_bytes) for t in reader.tensors)
    embd = sum(int(t.n_bytes) for t in reader.tensors if t.name == "token_embd.weight")
    return {"weights": total, "token_embd": embd, "per_token": total - embd, "file": os.path.getsize(path)}
