"""framefeed's engine: the public low-level API that `VideoDecoder`,
`DecodePool`, `ClipLoader`, the service and Ray are built from.

A decode is values moving through stages; the package tree follows them:

    source -> demux -> plan -> packets -> executor -> backends
    (what the   (container,   (which frames,   (compressed     (runs a plan   (packets -> RGB
     user gave)  index,        from where:      packets a plan  over packets   frames in the
                 metadata)     a picklable      needs: a        with a         caller's memory:
                               DecodePlan)      PacketBundle)   backend)       CPU or NVDEC)

- `source.resolve_source`: a path, URL, bytes, tensor or file object -> what PyAV opens.
- `demux`: `Demuxer` (the container and stream, itself a `PacketSource`),
  `metadata`, the exact `frame_index`, MP4 sample tables (`isobmff`),
  which packets nothing references (`disposable`).
- `opening.open_stream`: source -> `OpenedStream` (demuxer, metadata, timeline,
  `CodecParameters`, disposable test), per seek mode.
- `timeline`: indices and times -> `Target`s and seek points (plain values).
- `plan`: targets -> `DecodePlan` (`build_plan`, `time_range_plan`).
- `packets` + `bundling`: the packets a plan needs (`build_bundle`,
  `ship_request`) as a picklable `PacketBundle`, replayed by `BundleSource`.
- `executor.execute_plan(plan, source, backend, out)`: the one executor; it
  writes each target into its `OutputBuffer` slot (`OutputBuffer.allocate`).
- `backends`: `open_backend(params, device, BackendContext(...))` -> the
  backend that decodes a stream for a device (registry; NVDEC or CPU).

The stages are passive: none starts threads or processes, so callers compose
their own pipelines (a DataLoader worker plans and bundles, the main process
decodes; a pool runs executors on its threads). What a stage returns is a
plain value that pickles, except the demuxer and backends, which own native
resources and stay in the process that opened them. A backend is used by one
thread at a time.

Shipping a request to a spawned worker and decoding it here (the README's
example, run by tests/test_engine_api.py; `python -m framefeed.samples`
writes the video):

    import multiprocessing as mp

    import torch

    from framefeed.engine import (BackendContext, BundleSource, OutputBuffer, execute_plan,
                                  open_backend, ship_request)

    if __name__ == "__main__":
        with mp.get_context("spawn").Pool(1) as workers:      # the worker never opens a decoder
            plan, bundle = workers.apply(ship_request, ("samples/h264_bframes.mp4",), {"indices": [0, 30, 60]})
        backend = open_backend(bundle.params, torch.device("cpu"), BackendContext()).backend
        out = OutputBuffer.allocate(plan.slot_count, *bundle.params.frame_size, backend.output_device)
        execute_plan(plan, BundleSource(bundle), backend, out)
        print(out.as_order("NCHW").shape, out.pts_seconds)    # the frames VideoDecoder gives
        backend.close()

Modules not named here, and names starting with `_`, are internal.
"""

from framefeed.engine.backends import (
    BackendContext,
    BackendSelection,
    BackendSpec,
    CpuFallbackStatus,
    open_backend,
    register,
    resolve_device,
)
from framefeed.engine.bundling import build_bundle, ship_request
from framefeed.engine.demux.demuxer import Demuxer
from framefeed.engine.demux.metadata import VideoStreamMetadata
from framefeed.engine.executor import FrameBackend, OutputBuffer, execute_plan
from framefeed.engine.opening import OpenedStream, open_stream
from framefeed.engine.packets import (
    BundleSource,
    CodecParameters,
    MissingPacketsError,
    PacketBundle,
    PacketSource,
)
from framefeed.engine.plan import DecodePlan, Run, Target, build_plan, time_range_plan
from framefeed.engine.source import VideoSource, resolve_source

__all__ = [
    "BackendContext",
    "BackendSelection",
    "BackendSpec",
    "BundleSource",
    "CodecParameters",
    "CpuFallbackStatus",
    "DecodePlan",
    "Demuxer",
    "FrameBackend",
    "MissingPacketsError",
    "OpenedStream",
    "OutputBuffer",
    "PacketBundle",
    "PacketSource",
    "Run",
    "Target",
    "VideoSource",
    "VideoStreamMetadata",
    "build_bundle",
    "build_plan",
    "execute_plan",
    "open_backend",
    "open_stream",
    "register",
    "resolve_device",
    "resolve_source",
    "ship_request",
    "time_range_plan",
]
