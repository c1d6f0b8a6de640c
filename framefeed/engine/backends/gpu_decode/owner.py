"""Who owns NVDEC decoders: `NvdecDecoders`, one per CUDA device and owner.

Whoever decodes holds one and passes it in: a `VideoDecoder` uses the
process default of its device (`default_decoders`), a pool thread or a
service worker creates its own, so decoders are never shared by accident
and their lifetime is the owner's. An owner keeps the device's idle
decoders (`decoder_cache.DecoderCache`), the `GetDecoderCaps` answers, and
the `NvdecRuntime`: the machine-facing pieces (PyNvVideoCodec, CUDA streams
and contexts, the colour kernel). Tests hand an owner an emulated runtime
(`tests/gpu_fixtures.py`) instead of patching module globals.
"""

from __future__ import annotations

import atexit
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from framefeed.engine.backends.gpu_decode.backend import NvdecBackend, SurfaceConverter
from framefeed.engine.backends.gpu_decode.bitstream import NVDEC_CODECS, PacketPreparer
from framefeed.engine.backends.gpu_decode.capabilities import (
    DecoderCapsCache,
    StreamTraits,
    hardware_reason,
    pynvvideocodec_caps_query,
    stream_reason,
    traits_of,
)
from framefeed.engine.backends.gpu_decode.colour import surface_format_for
from framefeed.engine.backends.gpu_decode.decoder_cache import (
    DecoderCache,
    DecoderKey,
    PooledDecoder,
    capacity_from_environment,
    size_bucket,
)
from framefeed.engine.backends.gpu_decode.reaper import reaper
from framefeed.engine.backends.gpu_decode.streams import CudaCalls, OwnedStream
from framefeed.engine.packets import CodecParameters
from framefeed.transforms import TransformPipeline


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


@dataclass
class NvdecRuntime:
    """What NVDEC decoding needs from the machine (`cuda_runtime()` is the real one).

    Attributes:
        nvc: the PyNvVideoCodec module (or a stand-in with `PacketData`,
            `GetDecoderCaps`, `CreateDecoder`).
        device_facts: device index -> (compute capability or None, device name).
        create_decoder: `DecoderKey` -> a new `PooledDecoder` created with the
            key's size as its maximum, on a new `OwnedStream` of its own.
        retire: takes over a decoder the cache evicts and destroys it (the
            real one hands it to the reaper thread); None: the last reference
            is dropped inline.
        make_converter: (device index, decoder's `OwnedStream`, surface format,
            traits, quarter turns, transforms) -> the `SurfaceConverter` writing
            RGB, cropped and resized by `transforms` (a `TransformPipeline`, or
            None for full frames) in the same pass.
        prepare_kernel: (device index, bytes per sample) -> None, before first use.
        output_device: device index -> where output tensors live.
        calls: the CUDA runtime calls for streams framefeed owns (a pool
            session's own stream for uploads); None on a runtime whose output
            is on the host.
    """

    nvc: Any
    device_facts: Callable[[int], tuple[tuple[int, int] | None, str]]
    create_decoder: Callable[[DecoderKey], PooledDecoder]
    retire: Callable[[PooledDecoder], None] | None
    make_converter: Callable[[int, Any, str, StreamTraits, int, TransformPipeline | None], SurfaceConverter]
    prepare_kernel: Callable[[int, int], None]
    output_device: Callable[[int], torch.device]
    calls: CudaCalls | None = None


def import_optional(name: str, what: str) -> tuple[Any, str]:
    """(module, "") or (None, why it cannot be imported). A failed import is
    tried again next time (Python does not cache failures)."""
    try:
        return __import__(name), ""
    except Exception as error:  # ImportError, OSError, PyNvVideoCodec's RuntimeError
        return None, f"{what} cannot be imported ({first_line(error)})"


def load_pynvvideocodec() -> tuple[Any, str]:
    """(PyNvVideoCodec, "") or (None, reason): its import fails without the
    driver's video libraries (libnvcuvid.so.1, libnvidia-encode.so.1)."""
    return import_optional("PyNvVideoCodec", "PyNvVideoCodec (pip install PyNvVideoCodec>=2.2.4)")


def load_cupy() -> tuple[Any, str]:
    return import_optional("cupy", "CuPy (pip install cupy-cuda13x or cupy-cuda12x)")


def cuda_runtime() -> tuple[NvdecRuntime | None, str]:
    """The real runtime, or (None, why NVDEC cannot be used in this process)."""
    if not torch.cuda.is_available():
        return None, "torch sees no CUDA GPU"
    nvc, reason = load_pynvvideocodec()
    if nvc is None:
        return None, reason
    cupy, reason = load_cupy()
    if cupy is None:
        return None, reason
    from framefeed.engine.backends.gpu_decode.backend import CudaSurfaceConverter
    from framefeed.engine.backends.gpu_decode.kernels import CupyKernelLaunch, compile_kernel
    from framefeed.engine.backends.gpu_decode.streams import cupy_cuda_calls

    calls = cupy_cuda_calls()

    def make_converter(index: int, stream: OwnedStream, surface_format: str, traits: StreamTraits, turns: int,
                       transforms: TransformPipeline | None) -> Any:
        return CudaSurfaceConverter(torch.device("cuda", index), stream, surface_format, traits.width,
                                    traits.height, traits.colour, turns, transforms, launch=CupyKernelLaunch())

    return NvdecRuntime(
        nvc=nvc,
        device_facts=lambda index: (torch.cuda.get_device_capability(index), torch.cuda.get_device_name(index)),
        create_decoder=functools.partial(create_pynvvideocodec_decoder, nvc, calls, _primary_context),
        retire=reaper().retire,
        make_converter=make_converter,
        prepare_kernel=compile_kernel,
        output_device=lambda index: torch.device("cuda", index),
        calls=calls,
    ), ""


def _primary_context(device_index: int) -> int:
    """The device's primary CUDA context handle (the one torch uses), so the
    decoder and our kernels share a context."""
    import cupy

    torch.cuda.init()
    with cupy.cuda.Device(device_index):
        return int(cupy.cuda.driver.ctxGetCurrent())


def create_pynvvideocodec_decoder(nvc: Any, calls: CudaCalls, context: Callable[[int], int],
                                  key: DecoderKey) -> PooledDecoder:
    """A PyNvVideoCodec decoder for `key` on a new stream of its own.

    `CreateDecoder` keywords as bound by PyNvVideoCodec 2.2.4 (the wheel's
    module lists gpuid, codec, cudacontext, cudastream, usedevicememory,
    maxwidth, maxheight, outputColorType, ...): `maxwidth`/`maxheight` are the
    key's size bucket, so every stream of the bucket fits without a
    reconfigure beyond the decoder's limits. A stream handle of 0 would make
    the decoder synchronise after every picture (`NvDecoder::
    HandlePictureDisplay`: `if (!m_cuvidStream) cuStreamSynchronize`).
    """
    stream = OwnedStream(calls, key.device_index)  # one stream per decoder, for its whole life
    try:
        decoder = nvc.CreateDecoder(
            gpuid=key.device_index,
            codec=getattr(nvc.cudaVideoCodec, NVDEC_CODECS[key.codec]),
            cudacontext=context(key.device_index),
            cudastream=stream.handle,
            usedevicememory=True,
            maxwidth=key.width,
            maxheight=key.height,
            outputColorType=nvc.OutputColorType.NATIVE,
        )
    except BaseException:
        stream.close()
        raise
    return PooledDecoder(key, decoder, stream)


def reconfigure_for(entry: PooledDecoder, width: int, height: int) -> None:
    """Prepare a reused decoder for a stream of `width x height` (display size),
    as NVIDIA's own decoder cache does (`DecoderCommon::ReconfigureDecoder`:
    `setReconfigParams({width, height})` on a cached decoder the stream fits).

    Without it, a new *coded* size is reconfigured keeping the previous
    display rectangle and target size (`NvDecoder::ReconfigureDecoder`: "Dont
    change display rect and get scaled output"), so pictures come out scaled;
    and a new display size with the same coded size reuses output buffers
    sized for the old one. `setReconfigParams` marks the next sequence change
    as the application's (full reconfigure, unscaled) and frees output
    buffers of another size. Called after the flush of the previous stream's
    pictures, so none of them is written into the new buffers.

    Raises:
        RuntimeError: the size exceeds the decoder's maximum (PyNvVideoCodec:
            "Resize dimensions must be lower than max width and height"); the
            size bucket makes this impossible.
    """
    entry.decoder.setReconfigParams(width, height)
    entry.configured = (width, height)


class NvdecDecoders:
    """The NVDEC decoders and capability answers of one owner on one device.

    Args:
        device_index: the CUDA device.
        runtime: the machine-facing pieces; None loads the real ones on first use.
        capacity: idle decoders kept (default `$FRAMEFEED_NVDEC_CACHE_SIZE` or 8).
        caps: `GetDecoderCaps` answers to share with other owners of the device
            (each query creates a CUDA context; a pool's sessions share one);
            None: this owner asks for its own.

    Thread-safe. `close()` destroys the idle decoders; backends still open
    keep theirs until they close.
    """

    def __init__(self, device_index: int = 0, runtime: NvdecRuntime | None = None,
                 capacity: int | None = None, caps: DecoderCapsCache | None = None) -> None:
        self.device_index = device_index
        self._runtime = runtime
        self._reason = ""
        self._loaded = runtime is not None
        self._capacity = capacity_from_environment() if capacity is None else capacity
        self._lock = threading.Lock()
        self._caps: DecoderCapsCache | None = caps
        self._cache: DecoderCache | None = None

    def runtime(self) -> tuple[NvdecRuntime | None, str]:
        """(runtime, "") or (None, why NVDEC is unusable here); loaded once."""
        with self._lock:
            if not self._loaded:
                self._runtime, self._reason = cuda_runtime()
                self._loaded = True
            return self._runtime, self._reason

    @property
    def decoder_cache(self) -> DecoderCache:
        runtime, reason = self.runtime()
        if runtime is None:
            raise RuntimeError(reason)
        with self._lock:
            if self._cache is None:
                self._cache = DecoderCache(runtime.create_decoder, self._capacity, runtime.retire)
            return self._cache

    def caps(self, traits: StreamTraits) -> dict[str, int]:
        runtime, reason = self.runtime()
        if runtime is None:
            raise RuntimeError(reason)
        with self._lock:
            if self._caps is None:
                self._caps = DecoderCapsCache(pynvvideocodec_caps_query(runtime.nvc))
        return self._caps.get(self.device_index, traits.codec, traits.chroma_format, traits.bit_depth)

    def open_backend(self, params: CodecParameters, *, stream: Any = None,
                     transforms: TransformPipeline | None = None) -> tuple[NvdecBackend | None, str]:
        """(backend, "") when NVDEC decodes the stream exactly, else (None,
        reason). `stream`: the PyAV stream when packets come from its demuxer
        (FFmpeg's bitstream filter then converts them); None for shipped
        packets. `transforms`: a pipeline resolved for the stream's frames
        (after rotation) that the colour kernel applies in the same launch
        (the backend's `applied_transforms`). Never raises for a stream or
        machine NVDEC cannot serve."""
        traits = traits_of(params)
        reason = stream_reason(traits)
        if reason:
            return None, reason
        runtime, reason = self.runtime()
        if runtime is None:
            return None, reason
        index = self.device_index
        try:
            caps = self.caps(traits)
        except Exception as error:
            return None, f"GetDecoderCaps failed for {traits.codec} ({first_line(error)})"
        compute_capability, device_name = runtime.device_facts(index)
        reason = hardware_reason(traits, caps, compute_capability, device_name)
        if reason:
            return None, reason
        surface_format = surface_format_for(traits.colour)
        cache = self.decoder_cache
        limit = (int(caps.get("width_max", 0)), int(caps.get("height_max", 0)))
        bucket = size_bucket(traits.width, traits.height, limit)
        try:
            pooled = cache.acquire(DecoderKey(index, traits.codec, *bucket, surface_format, traits.bit_depth))
        except Exception as error:
            return None, f"could not create an NVDEC decoder ({first_line(error)})"
        size = (traits.width, traits.height)

        def prepare() -> None:  # after the flush of the previous stream's pictures
            if pooled.configured is None:
                pooled.configured = size  # a new decoder configures itself from the stream
            else:
                reconfigure_for(pooled, *size)

        def failed() -> None:
            pooled.broken = True  # destroyed when given back, never reused

        try:
            runtime.prepare_kernel(index, 2 if surface_format in ("P016", "YUV444_16Bit") else 1)
            converter = runtime.make_converter(index, pooled.stream, surface_format, traits,
                                               params.rotation_quarter_turns, transforms or None)
            backend = NvdecBackend(
                decoder=pooled.decoder,
                make_packet=runtime.nvc.PacketData,
                preparer=PacketPreparer(stream if stream is not None else params),
                converter=converter,
                output_device=runtime.output_device(index),
                flush_first=pooled.reused,
                prepare=prepare,
                on_failure=failed,
                on_close=functools.partial(cache.release, pooled),
                transforms=transforms or None,
                producer=pooled.stream if isinstance(pooled.stream, OwnedStream) else None,
            )
        except Exception as error:  # e.g. the flush of a reused decoder failed: decode on the CPU instead
            pooled.broken = True
            cache.release(pooled)
            return None, f"could not set up the NVDEC backend ({first_line(error)})"
        return backend, ""

    def close(self, timeout: float | None = 30.0) -> None:
        """Destroy every idle decoder of this owner, and wait (at most
        `timeout` seconds) until every decoder retired so far is gone."""
        with self._lock:
            cache = self._cache
        if cache is not None:
            try:
                cache.clear()
            except Exception:  # at exit, a broken driver must not turn into a traceback
                pass
        reaper().drain(timeout)


_defaults: dict[int, NvdecDecoders] = {}
_defaults_lock = threading.Lock()


def default_decoders(device_index: int) -> NvdecDecoders:
    """The process's default owner for a device (what `VideoDecoder` uses)."""
    with _defaults_lock:
        if not _defaults:
            # Destroy idle decoders while CUDA is still up, not during module teardown.
            atexit.register(_close_defaults)
        owner = _defaults.get(device_index)
        if owner is None:
            owner = _defaults[device_index] = NvdecDecoders(device_index)
        return owner


def _close_defaults() -> None:
    with _defaults_lock:
        owners = list(_defaults.values())
    for owner in owners:
        owner.close()
