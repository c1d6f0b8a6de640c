"""Where the planes of a decoded NVDEC picture are in device memory.

PyNvVideoCodec returns each picture (NATIVE output) as one device
allocation, packed: the luma plane, then the chroma plane(s), every row
`width * bytes per sample` long (`NvDecoder::GenerateNativeOutput` copies the
mapped surface with `dstPitch = GetWidth() * m_nBPP`, chroma at
`dstPitch * m_nLumaHeight`; `ceil(height / 2)` chroma rows for 4:2:0) —
interleaved Cb/Cr rows for NV12/P016, whole Cb and Cr planes for
YUV444/YUV444_16Bit. `DecodedFrame.cuda()` lists one `CAIMemoryView` per
plane whose `__cuda_array_interface__` is (`GetCAIMemoryViewAndDLPack` and
the `CAIMemoryView` binding in PyNvVideoCodec's sources, same keys in the
2.2.4 wheel): `version` 3, `shape` `[H, W, 1]` for luma (`[H/2, W/2, 2]`
for NV12 chroma), `strides` `[W, 1, 1]` — in samples, not bytes, for the
16-bit formats —, `typestr` "|u1" or "|u2", `data` `(address, False)`,
`gpuIdx` 0, and `stream` **2** whenever the decoder was given a stream
(`dict["stream"] = self->stream == 0 ? 0 : 2`), i.e. the per-thread default
stream, not the decoder's. So the `stream` field is ignored: the pixels are
written on the decoder's own stream, which framefeed knows (`streams.py`).
Only the luma view is read: the 2.0.2 sources place 16-bit 4:4:4 chroma
views at `width * height` elements instead of bytes, while the single
packed allocation is what the decoder writes.

The memory belongs to the decoder and is overwritten by the next `Decode()`
(on the decoder's stream), so the converter makes an owned copy
(`CudaCalls.copy_bytes`) when a picture must outlive that call.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from framefeed.errors import FrameSizeChangedError

_SIXTEEN_BIT = ("P016", "YUV444_16Bit")


@dataclass(frozen=True)
class SurfacePlanes:
    """Addresses and geometry of one picture's planes (bytes throughout).

    Attributes:
        luma, cb, cr: device addresses of the first Y, Cb and Cr samples.
        luma_pitch, chroma_pitch: bytes from one row to the next.
        chroma_step: bytes from one chroma sample to the next in a row
            (2 samples for interleaved Cb/Cr, 1 for planar).
        width, height: picture size in pixels.
        sample_bytes: 1 (8-bit surfaces) or 2 (16-bit surfaces).
        base, size: the block holding every plane, for copies.
    """

    luma: int
    cb: int
    cr: int
    luma_pitch: int
    chroma_pitch: int
    chroma_step: int
    width: int
    height: int
    sample_bytes: int
    base: int
    size: int

    def moved_to(self, base: int) -> SurfacePlanes:
        """The same layout in another block of memory (an owned copy)."""
        shift = base - self.base
        return dataclasses.replace(self, luma=self.luma + shift, cb=self.cb + shift, cr=self.cr + shift,
                                   base=base)


def surface_layout(surface_format: str, address: int, pitch: int, width: int, height: int) -> SurfacePlanes:
    """The planes of a native surface whose luma plane starts at `address`
    with `pitch` bytes per row, chroma following at the same pitch."""
    sample = 2 if surface_format in _SIXTEEN_BIT else 1
    luma_bytes = pitch * height
    if surface_format in ("NV12", "P016"):
        chroma = address + luma_bytes
        return SurfacePlanes(address, chroma, chroma + sample, pitch, pitch, 2 * sample, width, height, sample,
                             address, luma_bytes + pitch * ((height + 1) // 2))
    if surface_format in ("YUV444", "YUV444_16Bit"):
        return SurfacePlanes(address, address + luma_bytes, address + 2 * luma_bytes, pitch, pitch, sample,
                             width, height, sample, address, 3 * luma_bytes)
    raise ValueError(f"unsupported surface format {surface_format!r}")


def surface_rows(surface_format: str, height: int) -> int:
    """Rows of a whole native surface of `height` picture rows."""
    return height + (height + 1) // 2 if surface_format in ("NV12", "P016") else 3 * height


def planes_of_decoded_frame(frame: Any, surface_format: str, width: int, height: int) -> SurfacePlanes:
    """The planes of a PyNvVideoCodec `DecodedFrame` (NATIVE output).

    Raises:
        FrameSizeChangedError: the picture's size is not the stream's.
    """
    sample = 2 if surface_format in _SIXTEEN_BIT else 1
    views = frame.cuda() if hasattr(frame, "cuda") else None
    if views:
        cai = views[0].__cuda_array_interface__
        shape = tuple(int(n) for n in cai["shape"])
        address = int(cai["data"][0])
        strides = cai.get("strides")
        pitch = int(strides[0]) if strides else shape[1] * sample
        # cai["stream"] is 2 (the per-thread default stream) whatever stream
        # the decoder runs on: not where the pixels are ready (module docstring).
    else:  # no per-plane views: the whole surface through DLPack
        whole = torch.from_dlpack(frame)
        shape, address = tuple(whole.shape), whole.data_ptr()
        pitch = whole.stride(0) * whole.element_size()
    rows, cols = shape[0], shape[1]
    if pitch < cols * sample:
        pitch *= sample  # strides given in samples rather than bytes
    if cols != width or rows not in (height, surface_rows(surface_format, height)):
        # As the CPU backend refuses a frame of another size (nothing is read or written).
        raise FrameSizeChangedError(
            f"NVDEC returned a {cols}x{rows} {surface_format} plane for a {width}x{height} stream: "
            "the frame size changes mid-stream, which framefeed does not decode (nothing was written "
            "for this frame)", (cols, rows), (width, height))
    return surface_layout(surface_format, address, pitch, width, height)


class _DeviceBytes:
    """Exposes `size` bytes at a device address through the CUDA array interface."""

    def __init__(self, address: int, size: int) -> None:
        self.__cuda_array_interface__ = {"shape": (size,), "typestr": "|u1", "data": (address, False),
                                         "strides": None, "version": 2}


def device_bytes(address: int, size: int, device: torch.device) -> torch.Tensor:
    """A uint8 tensor viewing memory this process did not allocate through
    torch (it does not own it: keep the owner alive)."""
    return torch.as_tensor(_DeviceBytes(address, size), device=device)


def planes_of_tensor(surface: torch.Tensor, surface_format: str, width: int, height: int) -> SurfacePlanes:
    """The planes of a native surface held in a row-contiguous tensor of
    `surface_rows(surface_format, height)` rows (tests, reference checks)."""
    if surface.stride(-1) != 1:
        raise ValueError("surface rows must be contiguous")
    pitch = surface.stride(0) * surface.element_size()
    return surface_layout(surface_format, surface.data_ptr(), pitch, width, height)
