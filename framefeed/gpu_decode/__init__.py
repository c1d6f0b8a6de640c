"""NVDEC decoding through PyNvVideoCodec, with our own colour conversion.

`open_nvdec_backend` is what `framefeed.backend_selection` calls for CUDA
devices. It decides, once, whether NVDEC decodes the stream exactly as the
CPU path would (`capabilities`), and either returns an `NvdecBackend` or the
reason it did not, which becomes `VideoDecoder.cpu_fallback`.

PyNvVideoCodec and CuPy are optional and imported lazily, the first time a
CUDA decoder is opened; `import framefeed` never imports them.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import torch

from framefeed.gpu_decode.backend import CudaSurfaceConverter, NvdecBackend
from framefeed.gpu_decode.bitstream import NVDEC_CODECS, PacketPreparer
from framefeed.gpu_decode.capabilities import (
    DecoderCapsCache,
    hardware_reason,
    pynvvideocodec_caps_query,
    stream_reason,
    stream_traits,
)
from framefeed.gpu_decode.colour import surface_format_for
from framefeed.gpu_decode.decoder_cache import (
    DecoderCache,
    DecoderKey,
    PooledDecoder,
    cache_for_device,
    capacity_from_environment,
)
from framefeed.gpu_decode.kernels import compile_kernel

__all__ = ["NvdecBackend", "new_decoder_cache", "nvdec_engine_count", "nvdec_unavailable_reason",
           "open_nvdec_backend"]

_load_lock = threading.Lock()
_modules: dict[str, tuple[Any, str]] = {}
_caps: DecoderCapsCache | None = None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def load_pynvvideocodec() -> tuple[Any, str]:
    """(PyNvVideoCodec module, "") or (None, why it cannot be imported).
    Tried once per process: `import PyNvVideoCodec` fails without the driver's
    video libraries (libnvcuvid.so.1, libnvidia-encode.so.1)."""
    return _load("PyNvVideoCodec", "PyNvVideoCodec (pip install PyNvVideoCodec>=2.2.4)")


def load_cupy() -> tuple[Any, str]:
    """(cupy module, "") or (None, why it cannot be imported)."""
    return _load("cupy", "CuPy (pip install cupy-cuda13x or cupy-cuda12x)")


def _load(name: str, what: str) -> tuple[Any, str]:
    with _load_lock:
        if name not in _modules:
            try:
                module = __import__(name)
                _modules[name] = (module, "")
            except Exception as error:  # ImportError, OSError, PyNvVideoCodec's RuntimeError
                _modules[name] = (None, f"{what} cannot be imported ({_first_line(error)})")
        return _modules[name]


def nvdec_unavailable_reason() -> str:
    """Why no stream can be decoded on NVDEC in this process ("" if it might be)."""
    if not torch.cuda.is_available():
        return "torch sees no CUDA GPU"
    for loader in (load_pynvvideocodec, load_cupy):
        module, reason = loader()
        if module is None:
            return reason
    return ""


def _caps_cache(nvc: Any) -> DecoderCapsCache:
    global _caps
    with _load_lock:
        if _caps is None:
            _caps = DecoderCapsCache(pynvvideocodec_caps_query(nvc))
        return _caps


def _primary_context(device_index: int) -> int:
    """The device's primary CUDA context handle (the one torch uses), so the
    decoder and our kernels share a context."""
    import cupy

    torch.cuda.init()
    with cupy.cuda.Device(device_index):
        return int(cupy.cuda.driver.ctxGetCurrent())


def _create_decoder(nvc: Any, key: DecoderKey, stream: Any = None) -> PooledDecoder:
    device = torch.device("cuda", key.device_index)
    if stream is None:
        stream = torch.cuda.Stream(device)  # one stream per decoder, for its whole life
    decoder = nvc.CreateDecoder(
        gpuid=key.device_index,
        codec=getattr(nvc.cudaVideoCodec, NVDEC_CODECS[key.codec]),
        cudacontext=_primary_context(key.device_index),
        cudastream=stream.cuda_stream,
        usedevicememory=True,
        outputColorType=nvc.OutputColorType.NATIVE,
    )
    return PooledDecoder(key, decoder, stream)


def _retire(entry: PooledDecoder) -> None:
    # Work queued on its stream may still read the decoder's pictures.
    if entry.stream is not None:
        entry.stream.synchronize()


def decoder_cache_for(device_index: int) -> DecoderCache:
    """The decoder cache of a CUDA device (PyNvVideoCodec must be importable)."""
    nvc, reason = load_pynvvideocodec()
    if nvc is None:
        raise RuntimeError(reason)
    return cache_for_device(device_index, functools.partial(_create_decoder, nvc), on_evict=_retire)


def new_decoder_cache(device_index: int, stream: Any = None, capacity: int | None = None) -> DecoderCache:
    """A decoder cache owned by its caller (a `framefeed.pool` session) rather
    than the process: the decoders it creates run on `stream` (None: a new
    stream per decoder). `capacity` idle decoders are kept (None: as the
    process-wide caches). PyNvVideoCodec must be importable."""
    nvc, reason = load_pynvvideocodec()
    if nvc is None:
        raise RuntimeError(reason)
    return DecoderCache(functools.partial(_create_decoder, nvc, stream=stream),
                        capacity_from_environment() if capacity is None else capacity, on_evict=_retire)


def nvdec_engine_count(device_index: int) -> int | None:
    """NVDEC engines of a CUDA device (`GetDecoderCaps`' `num_decoder_engines`
    for 8-bit 4:2:0 H.264, which every NVDEC generation decodes); None when
    NVDEC is unusable or the driver does not say."""
    if nvdec_unavailable_reason():
        return None
    nvc, _ = load_pynvvideocodec()
    try:
        count = int(_caps_cache(nvc).get(device_index, "h264", "420", 8).get("num_decoder_engines", 0))
    except Exception:  # a driver without the field or a failing query: unknown, not fatal
        return None
    return count if count > 0 else None


def open_nvdec_backend(demuxer: Any, metadata: Any, device: torch.device, rotation_quarter_turns: int,
                       cache: DecoderCache | None = None) -> tuple[NvdecBackend | None, str]:
    """(backend, "") when NVDEC can decode the demuxer's stream exactly, else
    (None, reason). Never raises for a stream or machine NVDEC cannot serve.
    The decoder comes from `cache` (None: the device's process-wide cache)."""
    traits = stream_traits(demuxer.stream)
    reason = stream_reason(traits)
    if reason:
        return None, reason
    for loader in (load_pynvvideocodec, load_cupy):
        module, reason = loader()
        if module is None:
            return None, reason
    nvc, _ = load_pynvvideocodec()
    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        caps = _caps_cache(nvc).get(index, traits.codec, traits.chroma_format, traits.bit_depth)
    except Exception as error:
        return None, f"GetDecoderCaps failed for {traits.codec} ({_first_line(error)})"
    reason = hardware_reason(traits, caps, torch.cuda.get_device_capability(index),
                             torch.cuda.get_device_name(index))
    if reason:
        return None, reason
    surface_format = surface_format_for(traits.colour)
    key = DecoderKey(index, traits.codec, traits.width, traits.height, surface_format)
    if cache is None:
        cache = decoder_cache_for(index)
    try:
        pooled = cache.acquire(key)
    except Exception as error:
        return None, f"could not create an NVDEC decoder ({_first_line(error)})"
    try:
        compile_kernel(index, 2 if surface_format in ("P016", "YUV444_16Bit") else 1)
        converter = CudaSurfaceConverter(torch.device("cuda", index), pooled.stream, surface_format,
                                         traits.width, traits.height, traits.colour, rotation_quarter_turns)
        backend = NvdecBackend(
            decoder=pooled.decoder,
            make_packet=nvc.PacketData,
            preparer=PacketPreparer(demuxer.stream),
            converter=converter,
            output_device=torch.device("cuda", index),
            flush_first=pooled.reused,
            on_close=functools.partial(cache.release, pooled),
        )
    except Exception as error:  # e.g. the flush of a reused decoder failed: decode on the CPU instead
        cache.release(pooled)
        return None, f"could not set up the NVDEC backend ({_first_line(error)})"
    return backend, ""
