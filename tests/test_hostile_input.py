"""Hostile input: bounded memory at open, only documented exception types, and
the damaged-packet policy. Ground truth is PyAV's sequential decode (FFmpeg,
the decoder of record) of the same damaged file."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import av
import numpy as np
import pytest

import corpus
from framefeed import VideoDecoder
from framefeed.engine.demux import isobmff
from framefeed.errors import DecodingError, VideoOpenError, documented_error, public_api
from framefeed.samplers import clips_at_random_indices

H264 = corpus.BY_NAME["h264_bframes_long_gop.mp4"]
REPO = Path(__file__).resolve().parent.parent


def _patched(data: bytes, box: bytes, offset: int, value: int) -> bytes:
    """`data` with the 32-bit word `offset` bytes after `box`'s type set to `value`."""
    out = bytearray(data)
    at = out.find(box)
    assert at > 0, box
    struct.pack_into(">I", out, at + offset, value)
    return bytes(out)


def _run_capped(code: str, cap_mb: int = 1024, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter whose address space may grow only
    `cap_mb` past what the imports took: a runaway allocation fails there, not here."""
    preamble = textwrap.dedent(f"""
        import os, resource, warnings
        import torch, framefeed
        from framefeed import VideoDecoder
        vsz = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (vsz + ({cap_mb} << 20),) * 2)
    """)
    return subprocess.run([sys.executable, "-c", preamble + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def _pyav_frames(path: Path) -> dict[int, np.ndarray]:
    """pts -> RGB of every frame FFmpeg outputs, decoding the file in order."""
    with av.open(str(path)) as container:
        return {f.pts: f.to_ndarray(format="rgb24") for f in container.decode(video=0)}


# -- bounded memory at open -----------------------------------------------------------------


@pytest.mark.parametrize("box", [
    # FFmpeg applies the first composition offset to every sample, so frames
    # leave the decoder out of pts order: the executor keeps looking past the
    # first later pts, within the keyframe interval plus the reorder delay.
    b"ctts",
    b"stts",
])
def test_corrupted_run_count_costs_no_memory_and_decodes_what_ffmpeg_outputs(tmp_path, box):
    """One run count of 0x7FFFFFFF used to be expanded into a 16 GiB array.
    Now the runs are summed first; the impossible table is named in a warning
    and the index comes from FFmpeg's packets, which FFmpeg itself bounds."""
    path = tmp_path / f"{box.decode()}_run.mp4"
    path.write_bytes(_patched(H264.path.read_bytes(), box, 12, 0x7FFFFFFF))
    result = _run_capped(f"""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            decoder = VideoDecoder({str(path)!r}, dimension_order="NHWC")
        print(len(decoder))
        print([str(w.message) for w in caught])
        batch = decoder.get_frames_at(list(range(len(decoder))))
        import numpy
        numpy.save({str(tmp_path / "frames.npy")!r}, batch.data.numpy())
        numpy.save({str(tmp_path / "pts.npy")!r}, batch.pts_seconds.numpy())
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    count, messages = result.stdout.splitlines()[:2]
    assert f"'{box.decode()}' box of track 1 covers" in messages and "2147483" in messages
    reference = _pyav_frames(path)
    frames, pts = np.load(tmp_path / "frames.npy"), np.load(tmp_path / "pts.npy")
    assert int(count) == len(reference) == len(frames)
    with av.open(str(path)) as container:
        time_base = container.streams.video[0].time_base
    for (ref_pts, ref_rgb), got_rgb, got_seconds in zip(sorted(reference.items()), frames, pts, strict=True):
        assert got_seconds == float(ref_pts * time_base)
        assert np.array_equal(got_rgb, ref_rgb)


@pytest.mark.parametrize("box, entry_bytes", [(b"stts", 8), (b"ctts", 8), (b"stss", 4)])
@pytest.mark.parametrize("kind", ["path", "bytes", "filelike"])
def test_table_claiming_more_entries_than_its_box_is_refused_before_ffmpeg_reads_it(tmp_path, box, entry_bytes, kind):
    """FFmpeg reserves memory for every entry these boxes claim: a flipped bit
    in the count asks for gigabytes. framefeed checks the count against the
    box first and names both."""
    data = _patched(H264.path.read_bytes(), box, 8, 0x10000000)
    path = tmp_path / "claims.mp4"
    path.write_bytes(data)
    source = {"path": path, "bytes": data, "filelike": io.BytesIO(data)}[kind]
    with pytest.raises(VideoOpenError, match=f"'{box.decode()}' box of track 1 claims 268435456 entries") as info:
        VideoDecoder(source)
    assert isinstance(info.value.__cause__, isobmff.SampleTableError)


def test_moov_size_beyond_the_file_is_not_read():
    """A corrupted top-level size must not become a read buffer of that size."""
    header = struct.pack(">I4s4sI", 16, b"ftyp", b"isom", 0) + struct.pack(">I4s", 400 << 20, b"moov") + bytes(64)

    class CountingReader(io.BytesIO):
        largest = 0

        def read(self, size=-1):
            CountingReader.largest = max(CountingReader.largest, size)
            return super().read(size)

    assert isobmff.read_moov(CountingReader(header), len(header)) is None
    assert isobmff.read_moov(CountingReader(header), None) is None  # size found by seeking
    assert CountingReader.largest <= 16


def test_deeply_nested_boxes_are_not_followed():
    """5000 nested `trak` boxes: no RecursionError, just no track."""
    inner = struct.pack(">I4s", 8, b"free")
    for _ in range(5000):
        inner = struct.pack(">I4s", 8 + len(inner), b"trak") + inner
    moov = struct.pack(">I4s", 8 + len(inner), b"moov") + inner
    assert isobmff.read_track_tables(io.BytesIO(moov), track_id=1) is None
    isobmff.check_entry_counts(inner)


def test_sample_count_larger_than_its_table_is_named():
    data = H264.path.read_bytes()
    moov = isobmff.read_moov(io.BytesIO(data), len(data))
    start = moov.find(b"stsz") + 4  # the box's payload
    damaged = bytearray(moov)
    struct.pack_into(">I", damaged, start + 8, 5_000_000)  # samples the table has no room for
    tables = isobmff.track_tables_from_moov(bytes(damaged), track_id=1)
    with pytest.raises(isobmff.SampleTableError, match="'stsz' box claims 5000000 samples but holds room for 200"):
        _ = tables.composition_offsets


def test_corrupted_run_count_opens_in_bounded_memory(tmp_path):
    """What the xfail above does not need: the open itself, under a 1 GiB cap."""
    path = tmp_path / "ctts_run.mp4"
    path.write_bytes(_patched(H264.path.read_bytes(), b"ctts", 12, 0x7FFFFFFF))
    result = _run_capped(f"""
        import warnings
        warnings.simplefilter("ignore")
        print(len(VideoDecoder({str(path)!r})))
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout) == 200


# -- damaged packets: return what FFmpeg outputs, raise for what it cannot -----------------------


@pytest.fixture(scope="module")
def damaged_second_gop():
    """A Matroska HEVC file (keyframes every 8 frames, 25 fps) with 50 random
    bytes inside its second keyframe interval: the demuxer finds one packet of
    that interval (0.6 s), FFmpeg outputs the frames at 0-0.12 s and 0.64-0.92 s,
    and seeking anywhere after 0.32 s lands on the keyframe at 0.64 s."""
    from framefeed.testing.fuzz_inputs import FuzzCase

    data, _ = FuzzCase("hevc.mkv", "burst", 1736125124).data(corpus.cache_dir() / "fuzz-seeds-v1")
    path = corpus.cache_dir() / "fuzz-hevc-burst.mkv"
    path.write_bytes(data)
    return path


def _sequential(path: Path) -> dict[int, np.ndarray]:
    with av.open(str(path)) as container:
        return {f.pts: f.to_ndarray(format="rgb24") for f in container.decode(video=0) if f.pts is not None}


def test_frame_ffmpeg_never_outputs_is_a_decoding_error(damaged_second_gop):
    """Policy: a requested frame FFmpeg does not output (its packets are
    damaged) is a DecodingError, never a neighbouring frame in its place
    (torchcodec 0.13 returns the next frame it decodes)."""
    reference = _sequential(damaged_second_gop)
    assert 600 not in reference and {120, 640} <= set(reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decoder = VideoDecoder(damaged_second_gop, dimension_order="NHWC")
        assert decoder._timeline.index.pts[4] == 600  # indexed: its packet is there
        with pytest.raises(DecodingError, match=r"Frame 4 \(pts 600, 0.600000 s\) was not produced"):
            decoder.get_frame_at(4)
        # Frames FFmpeg does output come back, equal to its sequential decode.
        for index, pts in ((3, 120), (5, 640), (12, 920)):
            frame = decoder.get_frame_at(index)
            assert round(frame.pts_seconds * 1000) == pts
            assert np.array_equal(frame.data.numpy(), reference[pts])


def test_time_access_when_retried_seeks_land_on_the_same_keyframe(damaged_second_gop):
    """Approximate mode, 0.5 s: the seek lands on the keyframe at 0.64 s, and
    so does every retry at "just before 0.64 s" (the keyframe at 0.32 s is
    damaged), 24 times. The executor must step further back when a retry
    lands where the previous seek did; from the start, FFmpeg outputs 0.12 s
    and then 0.64 s, so 0.12 s is the frame on screen at 0.5 s."""
    reference = _sequential(damaged_second_gop)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decoder = VideoDecoder(damaged_second_gop, seek_mode="approximate", dimension_order="NHWC")
        frame = decoder.get_frame_played_at(0.5)
    assert frame.pts_seconds == 0.12
    assert np.array_equal(frame.data.numpy(), reference[120])


# -- only documented exception types ------------------------------------------------------


def test_unknown_codec_is_a_video_open_error(tmp_path):
    """PyAV gives no codec context for a codec id FFmpeg does not know; this
    used to leak as AttributeError: 'NoneType' object has no attribute 'thread_count'."""
    data = corpus.BY_NAME["h264_bframes.mkv"].path.read_bytes()
    at = data.find(b"V_MPEG4/ISO/AVC")
    path = tmp_path / "unknown_codec.mkv"
    path.write_bytes(data[:at] + b"V_MPEG4/ISO/XYZ" + data[at + 15:])
    with pytest.raises(VideoOpenError, match="codec FFmpeg does not know"):
        VideoDecoder(path)


def test_failed_rewind_says_what_failed_instead_of_operation_not_permitted(tmp_path):
    """FFmpeg's generic error -1 reads as EPERM once converted; a Matroska
    file without keyframes cannot be rewound (torchcodec fails here too)."""
    path = tmp_path / "no_keyframes.mkv"
    with av.open(str(H264.path)) as src, av.open(str(path), "w") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.size:
                packet.is_keyframe, packet.stream = False, out
                dst.mux(packet)
    with pytest.raises(VideoOpenError, match="generic error code -1") as info:
        VideoDecoder(path)
    assert "not permitted" not in str(info.value)


@pytest.mark.parametrize(
    "leak, expected",
    [
        (IndexError("index 0 is out of bounds for axis 0 with size 0"), "internal IndexError"),
        (AttributeError("'NoneType' object has no attribute 'thread_count'"), "internal AttributeError"),
        (MemoryError("Unable to allocate 16.0 GiB"), "ran out of memory"),
        (av.error.MemoryError(12, "Cannot allocate memory"), "ran out of memory"),
        (av.error.InvalidDataError(1094995529, "Invalid data found"), "Invalid data found.*from FFmpeg"),
        (av.error.PermissionError(1, "Operation not permitted"), "generic error code -1"),
    ],
)
def test_leaks_become_decoding_errors_with_the_cause_chained(monkeypatch, leak, expected):
    decoder = VideoDecoder(H264.path)

    def leaking(*args, **kwargs):
        raise leak

    monkeypatch.setattr(decoder._session, "decode_one", leaking)
    monkeypatch.setattr(decoder._session, "decode", leaking)
    for call in (lambda: decoder[3], lambda: decoder.get_frame_at(3), lambda: decoder.get_frames_at([1, 2]),
                 lambda: next(iter(decoder)), lambda: clips_at_random_indices(decoder, num_clips=1)):
        with pytest.raises(DecodingError, match=expected) as info:
            call()
        assert info.value.__cause__ is leak
    monkeypatch.undo()
    assert decoder.get_frame_at(3).data.shape == (3, 240, 320)  # the decoder still works


def test_argument_errors_and_documented_errors_pass_unchanged():
    decoder = VideoDecoder(H264.path)
    with pytest.raises(IndexError, match="Invalid frame index=500") as info:
        decoder.get_frame_at(500)
    assert type(info.value) is IndexError and info.value.__cause__ is None
    with pytest.raises(TypeError, match="Unsupported key type"):
        decoder["x"]
    decoder.close()
    with pytest.raises(RuntimeError, match="closed"):
        decoder[0]
    assert documented_error(DecodingError("x"), DecodingError, "call") is None
    # At open, a decoding failure is reported as the file failing to open.
    assert isinstance(documented_error(DecodingError("x"), VideoOpenError, "VideoDecoder"), VideoOpenError)


def test_file_object_read_error_is_named():
    """An OSError from the user's file object used to leak from PyAV as is."""
    data = corpus.BY_NAME["h264_bframes.mkv"].path.read_bytes()

    class FailingFile(io.BytesIO):
        def read(self, size=-1):
            if self.tell() > len(data) * 0.6:
                raise OSError("disk on fire")
            return super().read(size)

    with pytest.raises(VideoOpenError, match="Reading file-like object FailingFile failed: disk on fire") as info:
        VideoDecoder(FailingFile(data))
    assert isinstance(info.value.__cause__.__cause__, OSError)


def test_public_api_wraps_generators():
    @public_api(DecodingError)
    def frames():
        yield 1
        raise KeyError("slot")

    iterator = frames()
    assert next(iterator) == 1
    with pytest.raises(DecodingError, match="internal KeyError") as info:
        next(iterator)
    assert isinstance(info.value.__cause__, KeyError)


def test_constructor_leak_becomes_video_open_error(monkeypatch):
    import framefeed.engine.opening as module

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(module, "header_metadata", broken)
    with pytest.raises(VideoOpenError, match="VideoDecoder failed with an internal ZeroDivisionError") as info:
        VideoDecoder(H264.path)
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_no_warning_on_clean_files():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("h264_bframes_long_gop.mp4", "hevc_cra.mp4", "h264_bframes.mov", "discard_edit_list.mp4"):
            decoder = VideoDecoder(corpus.BY_NAME[name].path)
            assert decoder._timeline.index.built_from == "sample-table", name
