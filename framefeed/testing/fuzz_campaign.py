"""A fuzz campaign: every case x library x source kind x seek mode, then
counts per outcome and the cases where two libraries disagree.

Used by `tests/test_fuzz.py` (a seeded CI-sized subset) and
`benchmarks/fuzz_campaign.py` (the long run, with torchcodec side by side).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framefeed.testing.fuzz_inputs import FuzzCase
from framefeed.testing.fuzz_runner import FAILING_OUTCOMES, OUTCOMES, RunRequest, Zygote

SOURCES = ("path", "bytes")
SEEK_MODES = ("exact", "approximate")
# Outcomes that fail the harness (for framefeed).
FAILURES = FAILING_OUTCOMES
# Mutations whose runs have their frames judged against PyAV's decode (the
# `wrong_frame` rules: sizes that change, header timing that contradicts the
# packets); a reference decode per run costs too much to spend on all of them.
JUDGED_MUTATIONS = frozenset({"size_splice", "edit_list", "timescale", "ebml_value", "extreme_word", "truncate"})


@dataclass
class Limits:
    time_limit_s: float = 20.0
    memory_cap_mb: int = 2048
    rss_budget_mb: float = 256.0  # plus `rss_per_input_byte` times the input's size
    rss_per_input_byte: float = 16.0


def run_campaign(
    cases: Iterable[FuzzCase],
    libraries: list[str],
    *,
    limits: Limits | None = None,
    seed_root: str | os.PathLike | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every case with every library, source kind and seek mode.
    Returns one record per run (JSON-ready)."""
    limits = limits or Limits()
    records: list[dict[str, Any]] = []
    zygotes = {name: Zygote(name) for name in libraries}
    try:
        for zygote in zygotes.values():
            zygote.__enter__()
        with tempfile.TemporaryDirectory(prefix="framefeed-fuzz-") as scratch:
            for case in cases:
                data, damage = case.data(seed_root)
                path = Path(scratch) / f"case{Path(case.seed).suffix}"
                path.write_bytes(data)
                for library, zygote in zygotes.items():
                    for source in SOURCES:
                        for seek_mode in SEEK_MODES:
                            request = RunRequest(
                                str(path), library, source, seek_mode, case.rng_seed,
                                time_limit_s=limits.time_limit_s, memory_cap_mb=limits.memory_cap_mb,
                                rss_budget_mb=limits.rss_budget_mb + limits.rss_per_input_byte * len(data) / 2**20,
                                judge_frames=case.mutation in JUDGED_MUTATIONS,
                            )
                            result = zygote.run(request)
                            record = {"case": case.case_id, "damage": damage, "size": len(data),
                                      "library": library, "source": source, "seek_mode": seek_mode,
                                      **result.to_json()}
                            records.append(record)
                            if progress is not None:
                                progress(record)
    finally:
        for zygote in zygotes.values():
            zygote.close()
    return records


def outcome_counts(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per library: inputs tried, runs, and runs per outcome."""
    out: dict[str, dict[str, int]] = {}
    for library in sorted({r["library"] for r in records}):
        mine = [r for r in records if r["library"] == library]
        counts = Counter(r["outcome"] for r in mine)
        out[library] = {"inputs": len({r["case"] for r in mine}), "runs": len(mine),
                        **{name: counts.get(name, 0) for name in OUTCOMES}}
    return out


def _normalise(message: str) -> str:
    message = re.sub(r"'[^']*'", "'…'", message)
    return re.sub(r"-?\d+(\.\d+)?", "N", message)[:140]


def divergences(records: list[dict[str, Any]], ours: str = "framefeed", peer: str = "torchcodec") -> dict[str, Any]:
    """Runs and calls where `ours` raised and `peer` returned frames (and the
    reverse), grouped by `ours`' error message with numbers blanked out."""
    by_key = {(r["case"], r["source"], r["seek_mode"], r["library"]): r for r in records}
    ours_raised: Counter[str] = Counter()
    peer_raised: Counter[str] = Counter()
    examples: dict[str, str] = {}
    different_pts = 0
    compared = 0
    for (case, source, mode, library), mine in by_key.items():
        if library != ours:
            continue
        theirs = by_key.get((case, source, mode, peer))
        if theirs is None or mine["outcome"] in ("crash", "hang") or theirs["outcome"] in ("crash", "hang"):
            continue
        if mine["num_frames"] is None or theirs["num_frames"] is None:
            peer_frames = any(call["ok"] for call in theirs["calls"])
            if mine["num_frames"] is None and theirs["num_frames"] is not None and peer_frames:
                key = _normalise(mine["detail"])
                ours_raised[key] += 1
                examples.setdefault(key, f"{case} {source} {mode}")
            elif theirs["num_frames"] is None and any(call["ok"] for call in mine["calls"]):
                peer_raised[_normalise(theirs["detail"])] += 1
            continue
        peer_calls = {(c["call"], repr(c["arg"])): c for c in theirs["calls"]}
        for call in mine["calls"]:
            other = peer_calls.get((call["call"], repr(call["arg"])))
            if other is None:
                continue
            compared += 1
            if not call["ok"] and other["ok"]:
                key = f"{call['call']}: " + _normalise(call["error"]["message"])
                ours_raised[key] += 1
                examples.setdefault(key, f"{case} {source} {mode} {call['call']}({call['arg']})")
            elif call["ok"] and not other["ok"]:
                peer_raised[f"{call['call']}: " + _normalise(other["error"]["message"])] += 1
            elif call["ok"] and other["ok"] and call["pts"] != other["pts"] and None not in call["pts"]:
                different_pts += 1
    return {
        "calls_compared": compared,
        f"{ours}_raised_{peer}_returned": dict(ours_raised.most_common()),
        f"{peer}_raised_{ours}_returned": dict(peer_raised.most_common()),
        "both_returned_different_pts": different_pts,
        "examples": examples,
    }


def failures(records: list[dict[str, Any]], library: str = "framefeed") -> list[dict[str, Any]]:
    """`library`'s runs whose outcome fails the harness."""
    return [r for r in records if r["library"] == library and r["outcome"] in FAILURES]
