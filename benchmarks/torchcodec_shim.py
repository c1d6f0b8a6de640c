"""A pytest plugin that runs torchcodec's own tests against framefeed.

Loaded with `-p torchcodec_shim` (this folder on `PYTHONPATH`) in an
environment where torchcodec imports. Before any test module is imported it
replaces torchcodec's public video API with framefeed's, in torchcodec's own
modules, so `from torchcodec.decoders import VideoDecoder` in a test gives
framefeed's `VideoDecoder`: the decoder, its metadata class and fallback
status, `Frame`/`FrameBatch`, the four samplers, the decoder transforms and
`set_cuda_backend`. torchcodec's private modules (`_core`, the samplers'
helpers) stay torchcodec's: tests that call them test torchcodec.

`FRAMEFEED_SHIM=0` loads torchcodec untouched (the baseline run). Either way,
names a test module imports from torchcodec's experimental `_blocks` that this
torchcodec release lacks get placeholders, so the module imports (tests that
use them are not among the video tests run).
"""

from __future__ import annotations

import os

import torchcodec
import torchcodec._frame
import torchcodec.decoders
import torchcodec.decoders._blocks as blocks
import torchcodec.decoders._video_decoder
import torchcodec.samplers
import torchcodec.transforms

# Names later snapshots of torchcodec's tests import from `_blocks` (renamed before 0.17).
for _name in ("AudioDemuxer", "VideoDemuxer", "DecodedFrame", "PacketDecoder"):
    if not hasattr(blocks, _name):
        setattr(blocks, _name, type(_name, (), {"__doc__": "placeholder: not in this torchcodec release"}))

ACTIVE = os.environ.get("FRAMEFEED_SHIM", "1") != "0"

if ACTIVE:
    import framefeed
    import framefeed.decoders
    import framefeed.samplers
    import framefeed.transforms

    for _module in (torchcodec.decoders, torchcodec.decoders._video_decoder):
        _module.VideoDecoder = framefeed.decoders.VideoDecoder
        _module.CpuFallbackStatus = framefeed.decoders.CpuFallbackStatus
    torchcodec.decoders.SimpleVideoDecoder = framefeed.decoders.VideoDecoder
    torchcodec.decoders.VideoStreamMetadata = framefeed.decoders.VideoStreamMetadata
    torchcodec.decoders.set_cuda_backend = framefeed.decoders.set_cuda_backend
    for _module in (torchcodec, torchcodec._frame):
        _module.Frame = framefeed.Frame
        _module.FrameBatch = framefeed.FrameBatch
    for _name in ("clips_at_random_indices", "clips_at_regular_indices", "clips_at_random_timestamps",
                  "clips_at_regular_timestamps"):
        setattr(torchcodec.samplers, _name, getattr(framefeed.samplers, _name))
    for _name in ("Resize", "CenterCrop", "RandomCrop"):
        setattr(torchcodec.transforms, _name, getattr(framefeed.transforms, _name))


def pytest_report_header(config: object) -> str:
    target = f"framefeed (from {os.path.dirname(framefeed.__file__)})" if ACTIVE else "torchcodec itself"
    return f"torchcodec_shim: torchcodec {torchcodec.__version__}'s public video API is {target}"
