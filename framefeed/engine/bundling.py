"""Building a `PacketBundle` for a `DecodePlan`: the demuxing half of a
decode, for a worker process that never touches a decoder (or CUDA).

Exact mode ships exactly what the plan decodes: for each group of runs (a
seek and the runs continuing it) the packets from its keyframe up to the
last packet a target needs, in decode order, leaving out disposable packets
the executor would skip anyway. Approximate mode cannot know where its seeks
land until it decodes, so each group starts one keyframe earlier than the
seek lands (the margin the executor's retry uses) and runs through the
keyframe interval after the one holding the last requested time (so the
frame following it, which bounds its display interval, is there too).
"""

from __future__ import annotations

import math
from typing import Any

from framefeed.engine.demux.demuxer import Demuxer
from framefeed.engine.demux.disposable import DisposableTest
from framefeed.engine.packets import NO_TIMESTAMP, BundleWriter, CodecParameters, PacketBundle
from framefeed.engine.plan import DecodePlan, Run

# Seek attempts to reach a keyframe at or before a group's seek point.
_MAX_POSITIONING_SEEKS = 24
# Codecs whose every picture is output by the decode call of its own packet
# (or at the drain that follows): an exact group may stop right after its
# last target's packet. VP8/VP9/AV1 can hide a picture in one packet and show
# it from a later one, so their groups run to the end of the keyframe interval.
_OUTPUT_BY_OWN_PACKET = ("h264", "hevc", "mpeg1video", "mpeg2video", "mpeg4")


def build_bundle(plan: DecodePlan, demuxer: Demuxer, params: CodecParameters,
                 disposable: DisposableTest | None = None) -> PacketBundle:
    """The packets `plan` needs from `demuxer`'s stream, with `params`.

    `disposable` (exact mode): leaves out packets nothing references whose
    frames the plan does not want (`disposable_test_for(params)`); None
    ships them. The demuxer's position is left undefined.
    """
    writer = BundleWriter(params, demuxer.description)
    for group in _groups(plan.runs):
        if plan.exact:
            _exact_group(group, demuxer, writer, plan, disposable)
        else:
            _approximate_group(group, demuxer, writer, plan)
    return writer.finish()


def _groups(runs: list[Run]) -> list[list[Run]]:
    groups: list[list[Run]] = []
    for run in runs:
        if run.seek_pts is None and groups:
            groups[-1].append(run)
        else:
            groups.append([run])
    return groups


def _key_stamp(packet: Any) -> int:
    return packet.pts if packet.pts is not None else (packet.dts if packet.dts is not None else NO_TIMESTAMP)


def _landing_stamp(packet: Any) -> int:
    stamps = [t for t in (packet.dts, packet.pts) if t is not None]
    return min(stamps) if stamps else NO_TIMESTAMP


def _positioned(demuxer: Demuxer, seek_pts: int, margin: bool) -> tuple[Any, bool]:
    """An iterator of packets from a keyframe at or before `seek_pts` (one
    keyframe earlier still with `margin`), and whether it starts the stream.
    Seeks that land late (after `seek_pts`) are retried earlier, as the
    executor does; a seek that gets no further back means the stream's start."""
    one_second = max(math.ceil(1 / demuxer.time_base_seconds), 1)
    step = one_second
    target = seek_pts
    previous_key: int | None = None
    for _ in range(_MAX_POSITIONING_SEEKS):
        if target <= NO_TIMESTAMP:
            break
        demuxer.seek(target)
        packets = demuxer.packets()
        lead = []
        for packet in packets:
            lead.append(packet)
            if packet.is_keyframe:
                break
        if not lead or not lead[-1].is_keyframe:
            target -= step  # nothing to start from here: step back in time
            step *= 2
            continue
        key = lead[-1]
        key_pts = _key_stamp(key)
        if previous_key is not None and key_pts >= previous_key:
            break  # no further back than last time: go to the start
        previous_key = key_pts
        if key_pts > seek_pts:  # landed late
            target = min(target - step, _landing_stamp(lead[0]) - 1)
            step *= 2
            continue
        if margin:
            margin = False
            seek_pts = target = _landing_stamp(key) - 1
            continue
        return _chain([key], packets), False
    demuxer.seek(NO_TIMESTAMP)
    return demuxer.packets(), True


def _chain(first: list[Any], rest: Any) -> Any:
    yield from first
    yield from rest


def _exact_group(group: list[Run], demuxer: Demuxer, writer: BundleWriter, plan: DecodePlan,
                 disposable: DisposableTest | None) -> None:
    needed = {t.pts for run in group for t in run.targets}
    skip_before = plan.skip_before
    wanted = plan.wanted_pts
    to_interval_end = writer.params.codec not in _OUTPUT_BY_OWN_PACKET
    packets, at_start = _positioned(demuxer, group[0].seek_pts, margin=False)
    writer.begin(at_start)
    ended = True
    for packet in packets:
        pts = packet.pts
        if not needed and (not to_interval_end or packet.is_keyframe):
            ended = False
            break
        if (disposable is not None and pts is not None and skip_before is not None and pts < skip_before
                and pts not in wanted and disposable(packet)):
            continue
        writer.add(packet)
        needed.discard(pts)
    writer.end(ends_stream=ended)


def _approximate_group(group: list[Run], demuxer: Demuxer, writer: BundleWriter, plan: DecodePlan) -> None:
    time_base = plan.facts.time_base
    last = max(t.seconds for run in group for t in run.targets)
    if plan.time_range is not None:
        last = max(last, plan.time_range[1])
    limit = math.ceil(last * time_base.denominator / time_base.numerator)
    packets, at_start = _positioned(demuxer, group[0].seek_pts, margin=True)
    writer.begin(at_start)
    past_keyframe = False  # a keyframe displayed after the last time has gone by
    ended = True
    for packet in packets:
        if packet.is_keyframe and past_keyframe:
            ended = False
            break  # the interval after the last time is complete
        if packet.is_keyframe and packet.pts is not None and packet.pts > limit:
            past_keyframe = True
        writer.add(packet)
    writer.end(ends_stream=ended)


def ship_request(source: Any, seek_mode: str = "exact", *, indices: list[int] | None = None,
                 seconds: list[float] | None = None, time_range: tuple[float, float] | None = None,
                 stream_index: int | None = None) -> tuple[DecodePlan, PacketBundle]:
    """Plan one request and demux its packets: what a CUDA-free worker does.

    Exactly one of `indices` (valid, non-negative frame positions), `seconds`
    (times in `[begin, end)`) or `time_range` (`(start, stop)` seconds: every
    frame displayed in it) is given. Returns the plan and its bundle, both
    picklable; `framefeed.engine.executor.execute_plan(plan, BundleSource(bundle),
    backend, out)` decodes them anywhere. The source is closed on return.
    """
    from framefeed.engine.opening import open_stream  # here: opening imports the CPU backend module
    from framefeed.engine.plan import build_plan, time_range_plan

    opened = open_stream(source, stream_index, seek_mode)
    try:
        timeline = opened.timeline
        if time_range is not None:
            if timeline.exact:
                index = timeline.index
                first = max(index.index_played_at(time_range[0]), 0)
                last = int((index.pts_seconds < time_range[1]).sum())
                positions = list(range(first, max(last, first + 1)))
                plan = build_plan(timeline.targets_for_indices(positions), timeline, len(positions))
            else:
                plan = time_range_plan(time_range[0], time_range[1], timeline)
        elif indices is not None:
            plan = build_plan(timeline.targets_for_indices(list(indices)), timeline, len(indices))
        elif seconds is not None:
            plan = build_plan(timeline.targets_for_times(list(seconds)), timeline, len(seconds))
        else:
            raise ValueError("give indices, seconds or time_range")
        bundle = build_bundle(plan, opened.demuxer, opened.params, opened.disposable if plan.exact else None)
        return plan, bundle
    finally:
        opened.demuxer.close()
