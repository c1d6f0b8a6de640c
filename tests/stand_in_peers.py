"""Benchmark contenders that fail the way native peer libraries do: one
aborts the process (`os.abort()`, SIGABRT, as PyNvVideoCodec's FATAL errors
do), one dereferences a null pointer (SIGSEGV), one hangs, one raises.
`framefeed bench` loads them through its plugin hook:

    FRAMEFEED_BENCH_CONTENDERS=stand_in_peers framefeed bench ...

(with this directory on PYTHONPATH). Used by tests/test_cli_bench.py and
tests/test_gpu_throughput.py to check that such peers cost only their own
rows."""

from __future__ import annotations

import ctypes
import os
import time

from framefeed.bench.contenders import Contender


class _StandIn(Contender):
    def create_approximate(self, path: str, params: dict) -> int:
        self.fail()
        return 0

    def sequential(self, path: str, params: dict) -> int:
        self.fail()
        return 0

    def fail(self) -> None:
        raise NotImplementedError


class AbortingPeer(_StandIn):
    library = "aborting-peer"

    def fail(self) -> None:
        os.abort()


class SegfaultingPeer(_StandIn):
    library = "segfaulting-peer"

    def fail(self) -> None:
        ctypes.string_at(0)  # reads address 0: SIGSEGV


class HangingPeer(_StandIn):
    library = "hanging-peer"

    def fail(self) -> None:
        time.sleep(3600)


class RaisingPeer(_StandIn):
    library = "raising-peer"

    def fail(self) -> None:
        raise RuntimeError("the stand-in peer refuses")


def bench_contenders(devices: list[str], threads: int) -> list[Contender]:
    """The plugin hook: these peers on the CPU."""
    if "cpu" not in devices:
        return []
    return [cls("cpu", threads) for cls in (AbortingPeer, SegfaultingPeer, HangingPeer, RaisingPeer)]


class NoisyPeer(Contender):
    """Works, but writes to stdout from Python and from C (as native libraries
    do): the worker's answers must not be corrupted by it."""

    library = "noisy-peer"

    def sequential(self, path: str, params: dict) -> int:
        print("INVALID INDEX 120 (printed by Python)")
        os.write(1, b"[WARN] written to fd 1 by native code\n")
        return 7


class ThroughputStandIn(Contender):
    """A stand-in for benchmarks/gpu_throughput.py's decoders: fine at most
    thread counts (decoding 10 pictures per thread, returning 8), but it
    segfaults at 7 threads (as PyNvVideoCodec's ThreadedDecoder did on the
    H200) and hangs at 14."""

    library = "throughput-stand-in"

    def throughput(self, path: str, params: dict) -> int:
        threads = int(params["threads"])
        if threads == 7:
            ctypes.string_at(0)
        if threads == 14:
            time.sleep(3600)
        time.sleep(0.01)
        self.counts = {"decoded": 10 * threads, "returned": 8 * threads}
        return 8 * threads
