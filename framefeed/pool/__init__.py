"""`DecodePool`: frames and clips from many videos at once, decoders reused.

```python
from framefeed.pool import DecodePool
from framefeed.samplers import clips_at_random_indices

with DecodePool("cuda:0") as pool:                      # or "cpu"
    future = pool.submit("a.mp4", indices=[0, 50, 99])   # Future[PoolBatch]
    for batch in pool.map(requests):                     # bounded look-ahead
        ...
    clips = clips_at_random_indices(pool.videos(paths), num_clips=8, num_frames_per_clip=16)
    batches = [f.result() for f in clips]                # one 5-D batch per path
```

Stages (`_engine`, `_adapter`): `submit` queues a request; a few demux
threads open the file (container, metadata, frame index), turn the request
into a `DecodePlan`, wait for room in flight, read the plan's compressed
packets into a `PacketBundle` and close the file; N decode sessions each
take a plan and its bundle, run the executor with a backend they own, and
hand the batch to the future. Sessions never touch a container: demuxing
and decoding overlap, and every value between the stages is plain data.
On CUDA each session has its own NVDEC decoder owner
(`gpu_decode.NvdecDecoders`): a decoder is reused for the next video of the
same codec, surface format, bit depth and size bucket. Each decoder runs on
a CUDA stream of its own, and a request's batch is written there; the
session's own stream (never the legacy default stream, never one of torch's
shared pool) carries the uploads of streams decoded on the CPU. A batch is
complete when its future resolves (the session waited for it on the host,
GIL released) and is recorded for the stream current at `submit`. Work is GOP-exact as
in `VideoDecoder`: a bundle holds only the keyframe intervals that hold
targets, up to the last target, without pictures nothing references.
`stats()` counts frames decoded against frames returned.

Tuning (defaults come from the hardware, `_hardware`):
- `sessions`: on CUDA the NVDEC engine count (7 on H100/H200). Each session
  keeps about two pictures in flight on an engine; if `stats()` shows
  `nvdec_utilisation_percent` well below 100 with idle CPU, try up to 2x the
  engine count; if sessions' `busy_seconds` are near the uptime and the CPU
  is saturated (colour conversion and demuxing are CPU work too), use fewer.
  On the CPU: one session per core with `num_ffmpeg_threads=1`.
- `demux_threads`: 1-3. Raise it only when `demux_busy_seconds` approaches
  uptime times the thread count (many small files); more than 2-3 contend on
  FFmpeg's locks.
- `max_bytes_in_flight` / `max_frames_in_flight`: memory for batches being
  decoded. Requests beyond the cap wait (back-pressure); `submit` blocks when
  `queue_depth` requests are waiting. A batch counts until it is handed to
  its future; `map` bounds the batches handed out but not consumed by its
  `lookahead`.

Failures stay with their request: the future raises what `VideoDecoder`
would. A stream NVDEC cannot decode exactly is decoded on the CPU and
uploaded; `batch.info.cpu_fallback` (also `batch.cpu_fallback`) says why.
`close()` finishes or cancels queued work, stops the threads and destroys
every decoder; the pool refuses work afterwards.
"""

from framefeed.pool._engine import PoolClosedError
from framefeed.pool._pool import DecodePool
from framefeed.pool._request import DecodeRequest
from framefeed.pool._stats import DecodeInfo, PoolBatch, PoolStats, SessionStats
from framefeed.pool._videos import PooledVideos

__all__ = [
    "DecodeInfo",
    "DecodePool",
    "DecodeRequest",
    "PoolBatch",
    "PoolClosedError",
    "PoolStats",
    "PooledVideos",
    "SessionStats",
]
