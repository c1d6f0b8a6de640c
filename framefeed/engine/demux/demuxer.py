"""The demuxer: one opened container, its selected video stream, and packets.

Backends never touch the container: they receive the packets this module
reads, after the decode plan has positioned it with `seek`.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import av

from framefeed._warnings import warn_user
from framefeed.engine.demux import isobmff
from framefeed.engine.source import VideoSource
from framefeed.errors import DecodingError, VideoFileNotFoundError, VideoOpenError, ffmpeg_reason

# Far before any real timestamp: seeking here rewinds to the first keyframe.
STREAM_START = -(1 << 62)


class Demuxer:
    """Reads one video stream's packets from a container; a `PacketSource`
    (`framefeed.engine.packets`).

    Attributes:
        container: the PyAV input container.
        stream: the selected PyAV video stream.
        time_base: the stream's time base (seconds per pts unit).
        is_isobmff: whether the container is MP4/MOV (sample tables available).
    """

    def __init__(self, source: VideoSource, stream_index: int | None) -> None:
        self.source = source
        # MP4/MOV: the header is checked before FFmpeg parses it (see
        # `isobmff.check_entry_counts`) and kept for `track_tables`.
        self._moov = _read_checked_moov(source)
        self.container = _open_container(source)
        # PyAV containers sit in reference cycles, so without this a dropped
        # decoder would keep its file open until the garbage collector runs.
        self._closer = weakref.finalize(self, self.container.close)
        try:
            self.stream = _select_stream(self.container, stream_index, source.description)
            if self.stream.codec_context is None:  # PyAV's answer to an unknown codec id
                raise VideoOpenError(
                    f"The video stream {self.stream.index} of {source.description} uses a codec FFmpeg "
                    "does not know, so it cannot be decoded (damaged header?)"
                )
        except BaseException:
            self.container.close()
            raise
        for other in self.container.streams:
            if other.index != self.stream.index:
                other.discard = av.stream.Discard.all  # other streams' packets are never needed
        self.time_base: Fraction = self.stream.time_base or Fraction(1, 1)
        self.time_base_seconds = self.time_base.numerator / self.time_base.denominator
        self._tb_num, self._tb_den = self.time_base.numerator, self.time_base.denominator
        format_name = self.container.format.name if self.container.format else ""
        self.is_isobmff = "mov" in format_name or "mp4" in format_name
        self._tables: isobmff.TrackTables | None | bool = False  # False: not read yet
        self._at_start = True  # nothing demuxed since the container was opened
        self.demux_error: Exception | None = None  # the error that ended the last packet read early

    @property
    def description(self) -> str:
        return self.source.description

    def cut_after(self) -> int | None:
        """None: `packets()` ends only at the end of the stream."""
        return None

    def seconds(self, pts: int) -> float:
        """Seconds of a pts: the exact rational pts * time_base, rounded once.

        Rounding once means a time computed any other exact way (`i / fps`,
        `pts / timescale`, PyAV's `frame.time`) compares equal at frame
        boundaries; `pts * float(time_base)` can be one ulp off.
        """
        return pts * self._tb_num / self._tb_den

    def packets(self) -> Iterator[av.Packet]:
        """Packets of the selected stream from the current position to the end.
        The flush packets PyAV appends at end of file are left out.

        A read error ends the packets, as it ends the input in FFmpeg's own
        command-line tool: what came before is decodable, frames after it are
        reported missing by whoever asked for them. The error is kept in
        `demux_error` and reported once as a warning. (FFmpeg's "Cannot
        allocate memory" here is almost always a damaged packet size it
        refuses to allocate, so it is treated the same way.)

        Raises:
            DecodingError: a file-like source raised an I/O error.
        """
        self._at_start = False
        try:
            for packet in self.container.demux(self.stream):
                if packet.size:
                    yield packet
        except av.error.FFmpegError as error:
            if self.demux_error is None:
                warn_user(
                    f"Reading {self.source.description} failed ({ffmpeg_reason(error)}); frames after "
                    "that point are treated as missing (damaged file?)"
                )
            self.demux_error = error
        except OSError as error:  # the user's file object failed to read: not damage, an I/O failure
            raise DecodingError(f"Reading {self.source.description} failed: {error}") from error

    def seek(self, pts: int) -> None:
        """Position before the keyframe at or before `pts` (stream time base).
        `STREAM_START` rewinds to the beginning.

        Raises:
            DecodingError: the container cannot seek there, or a file-like
                source failed to read.
        """
        if pts <= STREAM_START and self._at_start:
            return  # freshly opened: already at the start (some inputs cannot seek at all)
        self._at_start = False
        try:
            self.container.seek(int(pts), stream=self.stream, backward=True, any_frame=False)
        except av.error.FFmpegError as error:
            if pts > STREAM_START:
                raise DecodingError(
                    f"Could not seek {self.source.description} to pts {pts}: {ffmpeg_reason(error)}"
                ) from error
            # Some demuxers refuse timestamps far before the stream (Matroska
            # without cues, e.g. a cut recording): rewind to the start instead.
            self._rewind(error)
        except OSError as error:  # raised by a file-like source's read, through FFmpeg
            raise DecodingError(f"Reading {self.source.description} failed: {error}") from error

    def _rewind(self, first_error: Exception) -> None:
        for target in (self.stream.start_time or 0, 0):
            try:
                self.container.seek(int(target), stream=self.stream, backward=True, any_frame=False)
                return
            except av.error.FFmpegError:
                continue
        raise DecodingError(
            f"Could not rewind {self.source.description} to its start: {ffmpeg_reason(first_error)}"
        ) from first_error

    def track_tables(self) -> isobmff.TrackTables | None:
        """The MP4/MOV sample tables of this stream's track, read once; None
        when the container is not ISO-BMFF or the tables cannot be read."""
        if self._tables is False:
            self._tables = None
            if self.is_isobmff and self._moov is not None:
                try:
                    self._tables = isobmff.track_tables_from_moov(self._moov, self.stream.id)
                except ValueError:
                    self._tables = None
            elif self.is_isobmff:
                reader = self.source.open_reader()
                if reader is not None:
                    position = reader.tell() if self.source.kind == "filelike" else 0
                    try:
                        self._tables = isobmff.read_track_tables(reader, self.stream.id, self.source.size)
                    except (ValueError, OSError, IndexError):
                        self._tables = None
                    finally:
                        if self.source.kind == "filelike":
                            reader.seek(position)
                        else:
                            reader.close()
        return self._tables or None

    def close(self) -> None:
        self._closer()


def codec_name(stream: Any) -> str:
    """FFmpeg's name of the stream's codec ("h264", "av1"; not a decoder's
    name such as "libdav1d"); "" when unknown."""
    return stream.codec.canonical_name if stream.codec else ""


def _read_checked_moov(source: VideoSource) -> bytes | None:
    """The `moov` payload of an MP4/MOV source, checked; None for other
    formats and for sources that cannot be read ahead of FFmpeg (URLs).

    Raises:
        VideoOpenError: a table in the header claims more entries than it holds.
    """
    reader = source.open_reader()
    if reader is None:
        return None
    try:
        position = reader.tell() if source.kind == "filelike" else 0
        try:
            reader.seek(0)
            if not isobmff.looks_like_isobmff(reader.read(8)):
                return None
            moov = isobmff.read_moov(reader, source.size)
        finally:
            reader.seek(position)
    except (OSError, ValueError):
        return None  # unreadable here: FFmpeg will say why
    finally:
        if source.kind != "filelike":
            reader.close()
    if moov is not None:
        try:
            isobmff.check_entry_counts(moov)
        except isobmff.SampleTableError as error:
            raise VideoOpenError(f"Could not open {source.description}: its MP4 header is damaged: {error}") from error
    return moov


def _open_container(source: VideoSource) -> Any:
    try:
        return av.open(source.open_for_av(), mode="r", metadata_errors="ignore")
    except av.error.FileNotFoundError as error:
        # A path that vanished since it was checked, or a file:// URL.
        raise VideoFileNotFoundError(2, f"Video file not found: {ffmpeg_reason(error)}", getattr(error, "filename", None)) from error
    except (av.error.FFmpegError, OSError, ValueError) as error:
        reason = ffmpeg_reason(error)
        opening = "Could not open input file" if source.kind in ("path", "url") else "Failed to open input buffer"
        raise VideoOpenError(
            f"{opening}: {reason}. Could not open {source.description} as a video container. "
            "Expected a media file FFmpeg can read (e.g. MP4, MKV, WebM, MOV)"
        ) from error


def _select_stream(container: Any, stream_index: int | None, description: str) -> Any:
    video_indices = [s.index for s in container.streams if s.type == "video"]
    if stream_index is None:
        if not video_indices:
            kinds = ", ".join(f"{s.index}: {s.type}" for s in container.streams) or "none"
            raise VideoOpenError(f"No video stream in {description} (streams: {kinds})")
        best = container.streams.best("video")
        return best if best is not None else container.streams[video_indices[0]]
    if isinstance(stream_index, bool) or not isinstance(stream_index, int):
        raise TypeError(f"stream_index must be an int or None, got {type(stream_index).__name__}")
    if not 0 <= stream_index < len(container.streams):
        raise ValueError(
            f"The stream index {stream_index} is not a valid stream. Invalid stream_index {stream_index}: "
            f"the file has {len(container.streams)} streams; video streams are at {video_indices}"
        )
    if stream_index not in video_indices:
        kind = container.streams[stream_index].type
        raise ValueError(
            f"The stream at index {stream_index} is not a video stream. Invalid stream_index {stream_index}: "
            f"stream {stream_index} is a {kind} stream, not video; video streams are at {video_indices}"
        )
    return container.streams[stream_index]
