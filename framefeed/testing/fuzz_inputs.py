"""Fuzz inputs: small seed videos and seeded mutations of them.

Seeds are encoded locally with PyAV's encoders (`framefeed.samples`) over the
containers and codecs framefeed meets: MP4 (H.264, HEVC, AV1, and H.264 with
its index first), MOV, MKV (H.264, HEVC, AV1), WebM (VP9) and MPEG-TS (H.264,
HEVC). A case is a seed, a mutation and a seed for the random generator, so
`FuzzCase.data()` rebuilds the same bytes anywhere.

Mutations aim at both halves of a file: its header (MP4 `moov`, Matroska
before the first cluster, the first TS packets), where sizes and counts live,
and its payload (the compressed pictures). Some aim at what a header says
about time (an MP4 edit list or timescale, Matroska's timing elements: the
header's frame grid then contradicts the packets) and at streams whose frame
size changes (packets of a seed spliced with a companion of another size).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from framefeed.samples import VideoSpec, encode_video, x264_options, x265_options

SEED_VERSION = 1


@dataclass(frozen=True)
class Seed:
    """A valid input that mutations start from."""

    name: str  # file name; its suffix picks the container
    codec: str
    make: Callable[[Path], None]
    campaign_only: bool = False  # too slow to decode for the CI subset


def _encode(spec: VideoSpec) -> Callable[[Path], None]:
    return lambda path: encode_video(path, spec)


def _faststart(source: Callable[[Path], None]) -> Callable[[Path], None]:
    """The same stream remuxed into an MP4 whose index comes first."""

    def make(path: Path) -> None:
        plain = path.with_name(path.stem + "-plain.mp4")
        source(plain)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")  # per process: concurrent makers
        with av.open(str(plain)) as src, av.open(str(partial), "w", format="mp4",
                                                 options={"movflags": "faststart"}) as dst:
            out = dst.add_stream_from_template(src.streams.video[0])
            for packet in src.demux(src.streams.video[0]):
                if packet.size:
                    packet.stream = out
                    dst.mux(packet)
        os.replace(partial, path)
        plain.unlink()

    return make


def _h264(**kw: object) -> VideoSpec:
    return VideoSpec(width=128, height=96, num_frames=24, codec_options=x264_options(8, 2), **kw)  # type: ignore[arg-type]


def _hevc(**kw: object) -> VideoSpec:
    return VideoSpec(codec="libx265", width=128, height=96, num_frames=24, codec_options=x265_options(8, 2), **kw)  # type: ignore[arg-type]


def _av1(**kw: object) -> VideoSpec:
    return VideoSpec(codec="libsvtav1", width=128, height=96, num_frames=16,
                     codec_options={"preset": "12", "g": "8"}, **kw)  # type: ignore[arg-type]


_VP9 = VideoSpec(codec="libvpx-vp9", width=128, height=96, num_frames=24,
                 codec_options={"deadline": "realtime", "cpu-used": "8", "g": "8"})

SEEDS: list[Seed] = [
    Seed("h264.mp4", "h264", _encode(_h264())),
    Seed("h264_faststart.mp4", "h264", _faststart(_encode(_h264()))),
    Seed("hevc.mp4", "hevc", _encode(_hevc())),
    Seed("av1.mp4", "av1", _encode(_av1())),
    Seed("h264.mov", "h264", _encode(_h264())),
    Seed("h264.mkv", "h264", _encode(_h264())),
    Seed("hevc.mkv", "hevc", _encode(_hevc())),
    Seed("av1.mkv", "av1", _encode(_av1())),
    Seed("vp9.webm", "vp9", _encode(_VP9)),
    Seed("h264.ts", "h264", _encode(_h264())),
    Seed("hevc.ts", "hevc", _encode(_hevc())),
    # Bigger pictures: damage costs real decoding time here.
    Seed("hevc_640x360.mp4", "hevc", _encode(VideoSpec(codec="libx265", width=640, height=360, num_frames=60,
                                                         codec_options=x265_options(30))), campaign_only=True),
]
SEEDS_BY_NAME = {seed.name: seed for seed in SEEDS}


def _smaller(spec: VideoSpec) -> VideoSpec:
    return VideoSpec(**{**spec.__dict__, "width": 80, "height": 48, "num_frames": 16, "seed": 7})


# Each seed's companion for size-changing splices: the same codec at 80x48.
COMPANIONS: dict[str, Seed] = {
    name: Seed(f"companion_{name}", seed.codec, _encode(_smaller(spec)))
    for name, seed, spec in [
        ("h264.mp4", SEEDS_BY_NAME["h264.mp4"], _h264()), ("h264.mkv", SEEDS_BY_NAME["h264.mkv"], _h264()),
        ("h264.mov", SEEDS_BY_NAME["h264.mov"], _h264()), ("h264.ts", SEEDS_BY_NAME["h264.ts"], _h264()),
        ("h264_faststart.mp4", SEEDS_BY_NAME["h264_faststart.mp4"], _h264()),
        ("hevc.mp4", SEEDS_BY_NAME["hevc.mp4"], _hevc()), ("hevc.mkv", SEEDS_BY_NAME["hevc.mkv"], _hevc()),
        ("hevc.ts", SEEDS_BY_NAME["hevc.ts"], _hevc()), ("vp9.webm", SEEDS_BY_NAME["vp9.webm"], _VP9),
    ]  # AV1: PyAV cannot remux it into a new stream (its template names the decoder, libdav1d)
}


def seed_dir(root: str | os.PathLike | None = None) -> Path:
    """Where seeds are kept: `root`, else `$FRAMEFEED_CACHE/fuzz-seeds-v<N>`."""
    from framefeed.samples import default_cache_dir

    path = Path(root) if root is not None else default_cache_dir() / f"fuzz-seeds-v{SEED_VERSION}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def seed_path(seed: Seed, root: str | os.PathLike | None = None) -> Path:
    """The seed's file, encoded on first use."""
    path = seed_dir(root) / seed.name
    if not path.exists():
        seed.make(path)
    return path


# -- where the header is ------------------------------------------------------------------


def header_ranges(data: bytes, name: str) -> list[tuple[int, int]]:
    """Byte ranges holding the container's header (sizes, counts, tables)."""
    suffix = Path(name).suffix
    if suffix in (".mp4", ".mov"):
        ranges, pos = [], 0
        while pos + 8 <= len(data):
            size = int.from_bytes(data[pos:pos + 4], "big")
            kind = data[pos + 4:pos + 8]
            if size == 1 and pos + 16 <= len(data):
                size = int.from_bytes(data[pos + 8:pos + 16], "big")
            if size < 8:
                size = len(data) - pos
            # Everything but the pictures is header: keep the mdat box header itself.
            ranges.append((pos, pos + 16) if kind == b"mdat" else (pos, min(pos + size, len(data))))
            pos += size
        return ranges
    if suffix in (".mkv", ".webm"):
        cluster = data.find(b"\x1f\x43\xb6\x75")
        return [(0, cluster if cluster > 0 else min(len(data), 4096))]
    return [(0, min(len(data), 188 * 8))]  # MPEG-TS: PAT, PMT and the first PES headers


def _payload_ranges(data: bytes, header: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, pos = [], 0
    for start, end in sorted(header):
        if start > pos:
            out.append((pos, start))
        pos = max(pos, end)
    if pos < len(data):
        out.append((pos, len(data)))
    return out or [(0, len(data))]


def _pick_offset(rng: np.random.Generator, ranges: list[tuple[int, int]]) -> int:
    sizes = np.array([end - start for start, end in ranges], dtype=np.float64)
    which = int(rng.choice(len(ranges), p=sizes / sizes.sum()))
    start, end = ranges[which]
    return int(rng.integers(start, max(end, start + 1)))


# -- mutations ----------------------------------------------------------------------------


def _region(data: bytes, name: str, rng: np.random.Generator) -> tuple[str, list[tuple[int, int]]]:
    header = [r for r in header_ranges(data, name) if r[1] > r[0]]
    if header and rng.random() < 0.5:
        return "header", header
    return "payload", _payload_ranges(data, header)


def truncate(data: bytes, name: str, rng: np.random.Generator) -> tuple[bytes, str]:
    region, ranges = _region(data, name, rng)
    cut = max(_pick_offset(rng, ranges), 1)
    return data[:cut], f"cut to {cut} of {len(data)} bytes ({region})"


def bit_flips(data: bytes, name: str, rng: np.random.Generator) -> tuple[bytes, str]:
    region, ranges = _region(data, name, rng)
    out = bytearray(data)
    count = int(rng.integers(1, 9))
    where = [_pick_offset(rng, ranges) for _ in range(count)]
    for at in where:
        out[min(at, len(out) - 1)] ^= 1 << int(rng.integers(0, 8))
    return bytes(out), f"{count} bit flip(s) in the {region} at {sorted(where)}"


def burst(data: bytes, name: str, rng: np.random.Generator) -> tuple[bytes, str]:
    region, ranges = _region(data, name, rng)
    out = bytearray(data)
    at = _pick_offset(rng, ranges)
    length = int(rng.integers(1, 65))
    zeros = rng.random() < 0.3
    fill = bytes(length) if zeros else rng.integers(0, 256, length, dtype=np.uint8).tobytes()
    out[at:at + length] = fill[: max(len(out) - at, 0)]
    return bytes(out), f"{'zero' if zeros else 'random'} burst of {length} bytes in the {region} at {at}"


def extreme_word(data: bytes, name: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """A 32-bit word of the header set to an extreme value: where sizes and
    counts live, this is the damage that asks for huge allocations."""
    header = [r for r in header_ranges(data, name) if r[1] - r[0] >= 4] or [(0, len(data))]
    at = _pick_offset(rng, header) & ~3
    value = int(rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x10000000, int(rng.integers(0, 1 << 32))]))
    out = bytearray(data)
    out[at:at + 4] = value.to_bytes(4, "big")[: max(len(out) - at, 0)]
    return bytes(out), f"header word at {at} set to {value:#x}"


def drop_chunk(data: bytes, name: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """Bytes removed from the middle: every later offset shifts."""
    at = int(rng.integers(0, len(data)))
    length = int(rng.integers(1, max(2, len(data) // 20)))
    return data[:at] + data[at + length:], f"{length} bytes removed at {at}"


def random_bytes(data: bytes, name: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """Random bytes, half the time behind the seed's first 64 bytes (so the
    container is recognised and its parser reads the garbage)."""
    length = int(rng.integers(1, 65537))
    noise = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
    if rng.random() < 0.5:
        return data[:64] + noise, f"the seed's first 64 bytes then {length} random bytes"
    return noise, f"{length} random bytes"


def header_only(data: bytes, name: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """The header without the pictures it describes."""
    kept = b"".join(data[start:end] for start, end in sorted(header_ranges(data, name)))
    return kept or data[:1], f"header only ({len(kept)} of {len(data)} bytes)"


# -- what headers say about time ------------------------------------------------------------

_EXTREMES = (0, 1, 2, 0x7FFFFFFF, 0xFFFFFFFF)


def _box_at(data: bytes, kind: bytes) -> int | None:
    """Offset of the first box of this type (its size field), by a plain search."""
    at = data.find(kind)
    return at - 4 if at >= 4 else None


def set_edit_list_duration(data: bytes, value: int) -> bytes:
    """MP4/MOV: the first edit list entry's segment duration set to `value`."""
    at = _box_at(data, b"elst")
    if at is None:
        raise ValueError("no edit list (elst box)")
    out = bytearray(data)
    entry = at + 16
    width = 8 if data[at + 8] == 1 else 4  # version 1: 64-bit fields
    out[entry:entry + width] = (value % (1 << (8 * width))).to_bytes(width, "big")
    return bytes(out)


def set_timescale(data: bytes, value: int, box: bytes = b"mdhd") -> bytes:
    """MP4/MOV: the timescale of the first `mdhd` (media) or `mvhd` (movie) box."""
    at = _box_at(data, box)
    if at is None:
        raise ValueError(f"no {box.decode()} box")
    out = bytearray(data)
    field_at = at + 12 + (16 if data[at + 8] == 1 else 8)  # after version/flags and the two dates
    out[field_at:field_at + 4] = (value & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(out)


# Matroska elements whose values describe time or size (ID -> name).
EBML_ELEMENTS = {
    b"\x23\xe3\x83": "DefaultDuration",
    b"\x2a\xd7\xb1": "TimestampScale",
    b"\xb0": "PixelWidth",
    b"\xba": "PixelHeight",
}


def set_ebml_uint(data: bytes, element_id: bytes, value: int) -> bytes:
    """Matroska/WebM: the first `element_id` element's unsigned value set to
    `value` (truncated to the element's own size, which is kept)."""
    start = 0
    while True:
        at = data.find(element_id, start)
        if at < 0:
            raise ValueError(f"no {EBML_ELEMENTS.get(element_id, element_id.hex())} element")
        size_at = at + len(element_id)
        first = data[size_at] if size_at < len(data) else 0
        length = 8 - first.bit_length() + 1 if first else 0  # EBML size: leading zeros + 1 bytes
        if 1 <= length <= 8:
            size = int.from_bytes(data[size_at:size_at + length], "big") & ((1 << (7 * length)) - 1)
            if 1 <= size <= 8:
                out = bytearray(data)
                value_at = size_at + length
                out[value_at:value_at + size] = (value % (1 << (8 * size))).to_bytes(size, "big")
                return bytes(out)
        start = at + 1


def edit_list(data: bytes, name: str, rng: np.random.Generator) -> tuple[bytes, str]:
    value = int(rng.choice([*_EXTREMES, int(rng.integers(0, 1 << 32))]))
    return set_edit_list_duration(data, value), f"edit list segment duration set to {value:#x}"


def timescale(data: bytes, name: str, rng: np.random.Generator) -> tuple[bytes, str]:
    box = b"mdhd" if rng.random() < 0.75 else b"mvhd"
    value = int(rng.choice([*_EXTREMES, int(rng.integers(0, 1 << 32))]))
    return set_timescale(data, value, box), f"{box.decode()} timescale set to {value:#x}"


def ebml_value(data: bytes, name: str, rng: np.random.Generator) -> tuple[bytes, str]:
    present = [key for key in EBML_ELEMENTS if key in data]
    element = present[int(rng.integers(0, len(present)))]
    values = [0, 1, 2, 500_000_000, (1 << 64) - 1, int(rng.integers(0, 1 << 32))]
    value = values[int(rng.integers(0, len(values)))]  # Python ints: numpy would round 2**64 - 1
    return set_ebml_uint(data, element, value), f"{EBML_ELEMENTS[element]} set to {value:#x}"


def splice(first: bytes, second: bytes, name: str, cut: float) -> bytes:
    """`first`'s video packets up to `cut` (a fraction of them), then every
    packet of `second` from its first keyframe, in one stream with `first`'s
    header and continuing timestamps: a frame size change when `second`
    differs (VP9/AV1 keyframes, and H.264/HEVC in MPEG-TS, carry their size;
    elsewhere the second part references parameter sets the header lacks)."""
    fmt = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".ts": "mpegts"}[Path(name).suffix]
    with av.open(io.BytesIO(first)) as a, av.open(io.BytesIO(second)) as b:
        ours = [p for p in a.demux(a.streams.video[0]) if p.size]
        theirs = [p for p in b.demux(b.streams.video[0]) if p.size]
        ours = ours[: max(1, int(len(ours) * cut))]
        while theirs and not theirs[0].is_keyframe:
            theirs.pop(0)
        out = io.BytesIO()
        with av.open(out, "w", format=fmt) as dst:
            stream = dst.add_stream_from_template(a.streams.video[0])
            shift = max((p.pts or 0) + (p.duration or 1) for p in ours)
            base = min(p.dts if p.dts is not None else (p.pts or 0) for p in theirs) if theirs else 0
            scale = b.streams.video[0].time_base / a.streams.video[0].time_base
            for packet in ours:
                packet.stream = stream
                dst.mux(packet)
            for packet in theirs:
                copy = av.Packet(bytes(packet))
                copy.pts = shift + int(((packet.pts if packet.pts is not None else base) - base) * scale)
                copy.dts = shift + int(((packet.dts if packet.dts is not None else base) - base) * scale)
                copy.is_keyframe, copy.time_base, copy.stream = packet.is_keyframe, stream.time_base, stream
                dst.mux(copy)
        return out.getvalue()


def size_splice(data: bytes, name: str, rng: np.random.Generator, root: str | os.PathLike | None = None
                ) -> tuple[bytes, str]:
    companion = seed_path(COMPANIONS[name], root).read_bytes()
    cut = float(rng.uniform(0.2, 0.8))
    if rng.random() < 0.5:
        return splice(data, companion, name, cut), f"spliced with its 80x48 companion after {cut:.0%} of it"
    return splice(companion, data, name, cut), f"its 80x48 companion's first {cut:.0%}, then it"


MUTATIONS: dict[str, Callable[..., tuple[bytes, str]]] = {
    "truncate": truncate,
    "bit_flips": bit_flips,
    "burst": burst,
    "extreme_word": extreme_word,
    "drop_chunk": drop_chunk,
    "random_bytes": random_bytes,
    "header_only": header_only,
    "edit_list": edit_list,
    "timescale": timescale,
    "ebml_value": ebml_value,
    "size_splice": size_splice,
}
# Mutations that apply to some containers only (by suffix); the others apply to all.
APPLIES_TO = {"edit_list": (".mp4", ".mov"), "timescale": (".mp4", ".mov"), "ebml_value": (".mkv", ".webm")}
# Mutations that need other seed files (they take `root=`).
_NEEDS_ROOT = {"size_splice"}


def applies(mutation: str, seed: str) -> bool:
    return Path(seed).suffix in APPLIES_TO.get(mutation, (Path(seed).suffix,)) and (
        mutation != "size_splice" or seed in COMPANIONS)


@dataclass(frozen=True)
class FuzzCase:
    """One input: `seed` mutated by `mutation` with random seed `rng_seed`."""

    seed: str
    mutation: str
    rng_seed: int

    @property
    def case_id(self) -> str:
        return f"{self.seed}:{self.mutation}:{self.rng_seed}"

    def data(self, root: str | os.PathLike | None = None) -> tuple[bytes, str]:
        """The mutated bytes and a description of the damage."""
        original = seed_path(SEEDS_BY_NAME[self.seed], root).read_bytes()
        rng = np.random.default_rng([self.rng_seed, len(self.mutation)])
        if self.mutation in _NEEDS_ROOT:
            return MUTATIONS[self.mutation](original, self.seed, rng, root=root)
        return MUTATIONS[self.mutation](original, self.seed, rng)


def generate_cases(count: int, seed: int = 0, *, include_campaign_seeds: bool = True,
                   mutations: list[str] | None = None) -> list[FuzzCase]:
    """`count` cases, seeds and mutations interleaved so any prefix covers
    every container, codec and mutation kind (`mutations`: only these kinds;
    a kind meets only the seeds it applies to)."""
    seeds = [s.name for s in SEEDS if include_campaign_seeds or not s.campaign_only]
    kinds = list(mutations or MUTATIONS)
    rng = np.random.default_rng(seed)
    cases: list[FuzzCase] = []
    i = 0
    while len(cases) < count:
        name, kind = seeds[i % len(seeds)], kinds[(i // len(seeds) + i) % len(kinds)]
        i += 1
        if applies(kind, name):
            cases.append(FuzzCase(name, kind, int(rng.integers(0, 1 << 31))))
    return cases
