"""A client process for tests/test_serve.py (run as `python serve_worker.py MODE ADDRESS ...`).

compare ADDRESS SEED FILE...: decode a mixed set of requests through the
    service and with `VideoDecoder` in this process, and print one JSON line
    {"compared": n, "mismatches": [...], "transport": ...}.
hold ADDRESS FILE: take a few batches and keep them (leased slots), print
    "holding <leases>", then submit a long request and wait forever (the test
    SIGKILLs this process mid-request).
greedy ADDRESS FILE FRAMES: take batches of FRAMES frames and keep them all
    until the server refuses one (1 s timeout), print {"held_bytes", "held",
    "refused"}, then keep heart-beating until stdin closes.
exit-holding ADDRESS FILE: take a batch, keep it, print "holding", and exit
    normally without closing the client.
"""

from __future__ import annotations

import json
import random
import sys
import time
import warnings

import torch

from framefeed import VideoDecoder
from framefeed.client import connect
from framefeed.samplers import clips_at_random_indices, clips_at_regular_timestamps


def _requests(rng: random.Random, path: str, length: int, duration_end: float, begin: float) -> list[dict]:
    picks = [rng.randrange(-length, length) for _ in range(rng.randint(1, 6))]
    times = [rng.uniform(begin, duration_end - 1e-3) for _ in range(3)]
    start = rng.randrange(0, length)
    return [
        {"indices": picks},
        {"indices": picks, "dimension_order": "NHWC"},
        {"seconds": times},
        {"start": start, "stop": min(length, start + 7), "step": 2},
        {"indices": picks[:2], "seek_mode": "approximate"},
    ]


def _direct(path: str, request: dict) -> tuple:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decoder = VideoDecoder(path, seek_mode=request.get("seek_mode", "exact"),
                               dimension_order=request.get("dimension_order", "NCHW"))
        if "indices" in request:
            batch = decoder.get_frames_at(request["indices"])
        elif "seconds" in request:
            batch = decoder.get_frames_played_at(request["seconds"])
        else:
            batch = decoder.get_frames_in_range(request["start"], request["stop"], request["step"])
        return batch


def _same(got, want) -> bool:
    return (got.data.shape == want.data.shape and torch.equal(got.data, want.data)
            and torch.equal(got.pts_seconds, want.pts_seconds)
            and torch.equal(got.duration_seconds, want.duration_seconds))


def compare(address: str, seed: int, files: list[str]) -> None:
    client = connect(address, timeout=120)
    rng = random.Random(seed)
    mismatches, compared = [], 0
    submitted = []
    for path in files:
        with VideoDecoder(path) as decoder:
            length, meta = len(decoder), decoder.metadata
        for request in _requests(rng, path, length, meta.end_stream_seconds, meta.begin_stream_seconds):
            submitted.append((path, request, client.submit(path, **request)))
    for path, request, future in submitted:
        got = future.result()
        if not _same(got, _direct(path, request)):
            mismatches.append([path, request])
        compared += 1
    # The samplers through the service draw what per-decoder calls draw under the same seed.
    torch.manual_seed(seed)
    futures = clips_at_random_indices(client.videos(files), num_clips=3, num_frames_per_clip=4)
    regular = clips_at_regular_timestamps(client.videos(files), seconds_between_clip_starts=0.5,
                                          num_frames_per_clip=2)
    torch.manual_seed(seed)
    expected = [clips_at_random_indices(VideoDecoder(p), num_clips=3, num_frames_per_clip=4) for p in files]
    expected_regular = [clips_at_regular_timestamps(VideoDecoder(p), seconds_between_clip_starts=0.5,
                                                    num_frames_per_clip=2) for p in files]
    for path, future, want in zip(files * 2, futures + regular, expected + expected_regular, strict=True):
        got = future.result()
        if got.data.ndim != 5 or not _same(got, want):
            mismatches.append([path, "sampler"])
        compared += 1
    print(json.dumps({"compared": compared, "mismatches": mismatches, "transport": client.transport}), flush=True)
    client.close()


def hold(address: str, path: str) -> None:
    client = connect(address, timeout=120)
    held = [client.submit(path, indices=list(range(i, i + 5))).result() for i in range(0, 20, 5)]
    print(f"holding {client.stats()['leases']}", flush=True)
    client.submit(path)  # the whole file: still decoding when the test kills this process
    time.sleep(0.2)
    print("requested", flush=True)
    time.sleep(3600)
    print(held)


def greedy(address: str, path: str, frames: int) -> None:
    client = connect(address, timeout=120)
    held, refused = [], ""
    for start in range(0, 10_000, frames):
        try:
            held.append(client.submit(path, indices=[(start + k) % 150 for k in range(frames)], timeout=1.0).result())
        except Exception as error:  # the server's refusal ends the grab
            refused = f"{type(error).__name__}: {error}"
            break
    print(json.dumps({"held_bytes": sum(b.data.numel() for b in held), "held": len(held), "refused": refused}),
          flush=True)
    sys.stdin.read()  # heart-beating (the client's thread) until the test is done
    client.close()


_KEPT = []


def exit_holding(address: str, path: str) -> None:
    client = connect(address, timeout=120)
    _KEPT.append(client.submit(path, indices=[0, 1]).result())
    print("holding", flush=True)


if __name__ == "__main__":
    mode, address = sys.argv[1], sys.argv[2]
    if mode == "compare":
        compare(address, int(sys.argv[3]), sys.argv[4:])
    elif mode == "hold":
        hold(address, sys.argv[3])
    elif mode == "greedy":
        greedy(address, sys.argv[3], int(sys.argv[4]))
    elif mode == "exit-holding":
        exit_holding(address, sys.argv[3])
    else:
        raise SystemExit(f"unknown mode {mode}")
