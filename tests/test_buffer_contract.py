"""No write outside the caller's buffer, no pixel left unwritten, at any frame
size and pixel format (issue: swscale's SIMD stores whole 16-pixel blocks
past tightly sized lines, and skips the last `width % 8` pixels of lines with
no room for them).

Every output here ends exactly at a `PROT_NONE` guard page (or starts right
after one: `framefeed.testing.guard_pages`), so a stray byte faults at once;
the code under test runs in a forked child, so a fault fails the check
instead of the session. Pixels are compared with the ffmpeg command line's
`-pix_fmt rgb24` conversion of the same pictures (Debian's FFmpeg, an
independent build), bit for bit.

This file: the converter itself, every width 1-130 (each residue mod 64) and
200, 328, 426, 854, at several heights, in seven pixel formats, into
guard-bounded frames, into the middle of a batch (its neighbours must keep
their bytes) and rotated. `test_buffer_contract_paths.py`: every decoding
path on encoded videos.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch
from buffer_contract_support import (
    FFMPEG,
    FORMATS,
    HEIGHTS,
    WIDTHS,
    ffmpeg_rgb24_of_raw,
    synthetic_frame,
)

from framefeed.engine.backends.cpu_fallback.rgb import (
    RgbConverter,
    padded_rgb_picture,
    writes_exactly,
)
from framefeed.errors import FrameSizeChangedError
from framefeed.testing.guard_pages import ChildCrashed, guarded_tensor, run_in_child

pytestmark = pytest.mark.skipif(FFMPEG is None, reason="no ffmpeg executable on PATH (.ci/run installs Debian's)")

CANARY = 0xA5


def _sizes() -> list[tuple[int, int]]:
    return [(width, height) for width in WIDTHS for height in HEIGHTS]


def _sweep(pix_fmt: str, progress_path: str) -> list[str]:
    """Runs in the child: every size into guard-bounded outputs; returns the mismatches."""
    failures = []
    sizes = _sizes()
    frames = [synthetic_frame(width, height, pix_fmt, seed=i) for i, (width, height) in enumerate(sizes)]
    references = ffmpeg_rgb24_of_raw([(w, h, pix_fmt, raw) for (w, h), (_, raw) in zip(sizes, frames, strict=True)])
    converter = RgbConverter()  # one converter across sizes, as a decoder keeps one
    with open(progress_path, "w") as progress:
        for (width, height), (frame, _), expected in zip(sizes, frames, references, strict=True):
            for placement in ("end", "start"):
                progress.write(f"{width}x{height} into a frame ({placement} at a guard page)\n")
                progress.flush()
                dst = guarded_tensor((height, width, 3), placement=placement)
                converter.write(frame, dst)
                if not np.array_equal(dst.numpy(), expected):
                    failures.append(_describe(f"{width}x{height} {placement}", dst.numpy(), expected))
            progress.write(f"{width}x{height} into the middle of a batch\n")
            progress.flush()
            batch = guarded_tensor((3, height, width, 3))
            converter.write(frame, batch[1])
            converter.write(frame, batch[2])  # the last slot ends at the guard page
            if not (batch[0] == CANARY).all():
                failures.append(f"{width}x{height}: writing slot 1 changed slot 0")
            if not np.array_equal(batch[1].numpy(), expected) or not np.array_equal(batch[2].numpy(), expected):
                failures.append(_describe(f"{width}x{height} batch slot", batch[1].numpy(), expected))
    return failures


def _describe(case: str, got: np.ndarray, expected: np.ndarray) -> str:
    diff = np.abs(got.astype(np.int16) - expected.astype(np.int16))
    columns = np.flatnonzero(diff.max(axis=(0, 2)))
    return f"{case}: max |diff| {diff.max()}, columns {columns.min()}-{columns.max()} differ"


@pytest.mark.parametrize("pix_fmt", FORMATS)
def test_every_size_converts_inside_its_buffer_and_equals_ffmpeg(pix_fmt):
    with tempfile.NamedTemporaryFile("r", suffix=".progress") as progress:
        try:
            failures = run_in_child(lambda: _sweep(pix_fmt, progress.name))
        except ChildCrashed as crash:
            last = open(progress.name).read().splitlines()[-1:] or ["before the first conversion"]
            pytest.fail(f"{pix_fmt}: {crash} converting {last[0]}")
    assert not failures, f"{len(failures)} mismatches, first: {failures[:5]}"


@pytest.mark.parametrize("turns", [1, 2, 3])
@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv444p"])
def test_rotated_frames_stay_inside_their_buffer(pix_fmt, turns):
    sizes = [(width, 17) for width in [*range(1, 40), 426, 854]]
    frames = [synthetic_frame(width, height, pix_fmt, seed=width) for width, height in sizes]
    references = ffmpeg_rgb24_of_raw([(w, h, pix_fmt, raw) for (w, h), (_, raw) in zip(sizes, frames, strict=True)])

    def sweep() -> list[str]:
        converter = RgbConverter(rotation_quarter_turns=turns)
        failures = []
        for (width, height), (frame, _), expected in zip(sizes, frames, references, strict=True):
            upright = np.rot90(expected, turns, axes=(0, 1))
            dst = guarded_tensor(upright.shape)
            converter.write(frame, dst)
            if not np.array_equal(dst.numpy(), upright):
                failures.append(_describe(f"{width}x{height} turned {turns}", dst.numpy(), upright))
        return failures

    assert run_in_child(sweep) == []


def test_direct_writes_only_where_swscale_fills_lines_exactly():
    assert writes_exactly(torch.empty((1080, 1920, 3), dtype=torch.uint8))
    assert writes_exactly(torch.empty((360, 640, 3), dtype=torch.uint8))
    assert not writes_exactly(torch.empty((480, 854, 3), dtype=torch.uint8))
    assert not writes_exactly(torch.empty((240, 426, 3), dtype=torch.uint8))
    assert not writes_exactly(torch.empty((3, 240, 320), dtype=torch.uint8).permute(1, 2, 0))  # channels first
    misaligned = torch.empty(360 * 640 * 3 + 1, dtype=torch.uint8)[1:].view(360, 640, 3)
    assert not writes_exactly(misaligned)


def test_padded_pictures_leave_room_after_every_line():
    for width in (1, 17, 426, 854):
        picture = padded_rgb_picture(5, width)
        line = picture.stride(0)
        assert picture.data_ptr() % 64 == 0 and line % 64 == 0
        assert line >= width * 3 + 64  # more than swscale's largest overrun (45 bytes)
        assert picture.untyped_storage().nbytes() - (picture.data_ptr() - picture.untyped_storage().data_ptr()) \
            >= 5 * line


def test_a_frame_of_another_size_is_refused_and_nothing_is_written():
    frame, _ = synthetic_frame(64, 32, "yuv420p", seed=1)
    frame.pts = 7
    dst = guarded_tensor((16, 32, 3))
    with pytest.raises(FrameSizeChangedError, match=r"decoded at 64x32, but this stream's frames are 32x16.*pts 7") \
            as raised:
        RgbConverter().write(frame, dst)
    assert raised.value.frame_size == (64, 32) and raised.value.stream_size == (32, 16)
    assert (dst == CANARY).all()


def test_the_old_tight_destination_did_overrun():
    """The harness catches the bug it is for: swscale handed a tight 426-wide
    destination (what framefeed used to do) faults at the guard page."""
    frame, _ = synthetic_frame(426, 4, "yuv420p", seed=2)

    def tight() -> None:
        converter = RgbConverter()
        dst = guarded_tensor((4, 426, 3))
        converter._scale_into(frame, dst)  # bypassing the contract on purpose

    with pytest.raises(ChildCrashed, match="SIGSEGV|SIGBUS"):
        run_in_child(tight)


def test_children_report_exceptions():
    with pytest.raises(AssertionError, match="ValueError: boom"):
        run_in_child(lambda: (_ for _ in ()).throw(ValueError("boom")))
    assert run_in_child(lambda: os.getpid() != 0) is True
