"""Fuzz campaign: hostile inputs against framefeed, and torchcodec side by side.

Each case is a small generated video (MP4/MOV/MKV/WebM/TS; H.264, HEVC, VP9,
AV1) damaged by one seeded mutation: truncation, bit flips, bursts, an extreme
header word, removed bytes, random bytes, or the header alone. Every case runs
per library from a path and from bytes, in exact and approximate seek mode
(open + first, last and middle frame, a batch, a frame by time, a sampler), in
a forked child with a memory cap and a time limit (`framefeed.testing`).

Usage: python benchmarks/fuzz_campaign.py [--cases 500] [--seed 0] [--time-limit 30]
       [--libraries framefeed,torchcodec] [--name fuzz-cpu] [--output DIR]
Writes <name>.{md,json} into a new temporary folder (printed), or into
`--output DIR`: `--output benchmarks/results` replaces the committed results.
Exits 1 when framefeed crashed, hung, ran over the memory budget, raised an
undocumented exception type or a documented one over an internal error.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from framefeed.testing.fuzz_campaign import (
    Limits,
    divergences,
    outcome_counts,
    run_campaign,
)
from framefeed.testing.fuzz_inputs import MUTATIONS, SEEDS, generate_cases
from framefeed.testing.fuzz_runner import FAILING_OUTCOMES, OUTCOMES, library_available

RESULTS = Path(__file__).resolve().parent / "results"
_HOW_TO_READ = """How to read this (policy in README, "Bad input"): "was not produced" is framefeed refusing
to return a neighbour for a frame FFmpeg does not output (torchcodec returns the next frame
it decodes, or one labelled with the requested time); the few where FFmpeg does output the
frame, out of timestamp order, wait for the executor of issue 10, as does "Could not
position the decoder" (retried seeks landing on the same keyframe). "The file looks
truncated" is approximate mode declining to return the last frame for a time past the end
of a stream whose header promises more. Different timestamps are almost all MPEG-TS, where
torchcodec 0.13 returns the frame after the requested one.
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=500, help="inputs to generate (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the campaign (default 0)")
    parser.add_argument("--libraries", default=None,
                        help="comma-separated; default framefeed plus torchcodec when it imports")
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds per run (default 30)")
    parser.add_argument("--memory-cap-mb", type=int, default=2048,
                        help="address space a run may add (RLIMIT_AS, default 2048)")
    parser.add_argument("--rss-budget-mb", type=float, default=256.0,
                        help="resident memory a run may add, plus 16x the input's size (default 256)")
    parser.add_argument("--name", default="fuzz-cpu", help="results file name (default fuzz-cpu)")
    parser.add_argument("--output", metavar="DIR", default=None,
                        help="folder for <name>.md and <name>.json (default: a new temporary folder; "
                        f"{RESULTS.relative_to(RESULTS.parent.parent)} replaces the committed results)")
    parser.add_argument("--seed-dir", default=None, help="where seed videos are kept (default: framefeed's cache)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    libraries = args.libraries.split(",") if args.libraries else (
        ["framefeed", "torchcodec"] if library_available("torchcodec") else ["framefeed"])
    cases = generate_cases(args.cases, args.seed)
    limits = Limits(time_limit_s=args.time_limit, memory_cap_mb=args.memory_cap_mb, rss_budget_mb=args.rss_budget_mb)
    started = time.time()
    done = Counter()

    def progress(record: dict) -> None:
        done[record["library"]] += 1
        if record["library"] == "framefeed" and record["outcome"] in FAILING_OUTCOMES:
            print(f"  {record['outcome']}: {record['case']} {record['source']} {record['seek_mode']}: "
                  f"{record['detail'][:200]}", flush=True)
        total = sum(done.values())
        if total % 200 == 0:
            print(f"{total} runs, {time.time() - started:.0f} s", flush=True)

    records = run_campaign(cases, libraries, limits=limits, seed_root=args.seed_dir, progress=progress)
    elapsed = time.time() - started
    summary = {
        "measured": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "libraries": _versions(libraries),
        "cases": args.cases, "seed": args.seed, "limits": vars(limits), "seconds": round(elapsed, 1),
        "counts": outcome_counts(records),
        "ffmpeg_refused_memory": {lib: sum(1 for r in records if r["library"] == lib and r["ffmpeg_refused_memory"])
                                  for lib in libraries},
        # Internal errors the public boundary turned into documented types: each is a bug to fix at its origin.
        "safety_net_hits": sorted({f"{r['case']}: {r['detail'][:200]}" for r in records
                                   if r["library"] == "framefeed" and "with an internal" in r["detail"]}),
        "slowest": sorted(({k: r[k] for k in ("case", "library", "source", "seek_mode", "seconds", "outcome")}
                           for r in records), key=lambda r: -r["seconds"])[:10],
    }
    if "torchcodec" in libraries and "framefeed" in libraries:
        summary["divergences"] = divergences(records)
        summary["missing_frames"] = _missing_frames(records, args.seed_dir)
    output = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="framefeed-fuzz-campaign-"))
    output.mkdir(parents=True, exist_ok=True)
    # framefeed's runs that did not return frames throughout, without per-call details.
    kept = ("case", "damage", "source", "seek_mode", "outcome", "detail", "seconds", "rss_growth_mb")
    runs = [{k: r[k] for k in kept} for r in records if r["outcome"] != "ok" and r["library"] == "framefeed"]
    (output / f"{args.name}.json").write_text(
        json.dumps({"summary": summary, "framefeed_runs_not_ok": runs}, default=str, separators=(",", ":")) + "\n")
    failed = [r for r in records if r["library"] == "framefeed" and r["outcome"] in FAILING_OUTCOMES]
    markdown = _markdown(summary, failed, args)
    (output / f"{args.name}.md").write_text(markdown)
    print(markdown)
    print(f"written {output / args.name}.md and .json")
    return 1 if failed else 0


def _missing_frames(records: list[dict], seed_dir: str | None) -> dict[str, int]:
    """framefeed's "Frame N (pts P) was not produced" where torchcodec returned
    frames, split by whether FFmpeg outputs a frame with pts P when it decodes
    the whole damaged file in order (PyAV)."""
    import io
    import re

    import av

    from framefeed.testing.fuzz_inputs import FuzzCase

    outputs: dict[str, set[int]] = {}

    def sequential(case_id: str) -> set[int]:
        if case_id not in outputs:
            seed, mutation, rng_seed = case_id.split(":")
            data, _ = FuzzCase(seed, mutation, int(rng_seed)).data(seed_dir)
            try:
                with av.open(io.BytesIO(data)) as container:
                    outputs[case_id] = {f.pts for f in container.decode(video=0) if f.pts is not None}
            except (av.error.FFmpegError, IndexError, ValueError):
                outputs[case_id] = set()
        return outputs[case_id]

    by_key = {(r["case"], r["source"], r["seek_mode"], r["library"]): r for r in records}
    counts = Counter()
    for (case, source, mode, library), mine in by_key.items():
        theirs = by_key.get((case, source, mode, "torchcodec"))
        if library != "framefeed" or theirs is None:
            continue
        peer_ok = {(c["call"], repr(c["arg"])) for c in theirs["calls"] if c["ok"]}
        for call in mine["calls"]:
            match = None if call["ok"] else re.search(r"\(pts (-?\d+), ", call["error"]["message"])
            if match and (call["call"], repr(call["arg"])) in peer_ok:
                shown = int(match.group(1)) in sequential(case)
                counts["FFmpeg outputs that pts in order (executor, issue 10)" if shown
                       else "FFmpeg never outputs that pts (raise: policy)"] += 1
    return dict(counts)


def _versions(libraries: list[str]) -> dict[str, str]:
    import av

    versions = {"av": f"{av.__version__} (FFmpeg {'.'.join(map(str, av.ffmpeg_version_info)) if isinstance(av.ffmpeg_version_info, tuple) else av.ffmpeg_version_info})"}
    for name in libraries:
        module = __import__(name)
        versions[name] = getattr(module, "__version__", "?")
    return versions


def _markdown(summary: dict, failed: list[dict], args: argparse.Namespace) -> str:
    lines = [
        "# Fuzz campaign on CPU: framefeed vs torchcodec",
        "",
        f"Measured {summary['measured']}, {summary['machine']}; {', '.join(f'{k} {v}' for k, v in summary['libraries'].items())}.",
        f"`python benchmarks/fuzz_campaign.py --cases {args.cases} --seed {args.seed} --time-limit {args.time_limit:g}` "
        f"({summary['seconds']:.0f} s). Seeds: {', '.join(s.name for s in SEEDS)}; mutations: {', '.join(MUTATIONS)}.",
        "Each input runs per library from a path and from bytes, in exact and approximate mode "
        "(4 runs per input): open, first/last/middle frame, a 3-frame batch, a frame by time, "
        f"a sampler; each run in a forked child with RLIMIT_AS +{args.memory_cap_mb} MiB, a "
        f"{args.time_limit:g} s limit, and a resident-memory budget of +{args.rss_budget_mb:g} MiB "
        "plus 16x the input.",
        "",
        "| library | inputs tried | runs | " + " | ".join(OUTCOMES) + " | FFmpeg refused an allocation |",
        "| --- | --- | --- | " + " | ".join("---" for _ in OUTCOMES) + " | --- |",
    ]
    for library, counts in summary["counts"].items():
        lines.append(f"| {library} | {counts['inputs']} | {counts['runs']} | "
                     + " | ".join(str(counts[o]) for o in OUTCOMES)
                     + f" | {summary['ffmpeg_refused_memory'].get(library, 0)} |")
    lines += [
        "",
        "Outcomes: `ok` every call returned frames; `clean_error` a documented exception type "
        "(framefeed: VideoOpenError, DecodingError, FrameTimeOutOfRangeError; torchcodec: the "
        "built-in types it raises) whose cause chain holds only data errors; `wrapped_internal` a documented "
        "type over an internal error (a KeyError, IndexError, RuntimeError... that the public boundary "
        "wrapped: a hidden bug); `undocumented` any other type; `memory` resident memory over "
        "budget or a Python-level MemoryError; `crash` killed by a signal; `hang` over the time limit. "
        "FFmpeg refusing an allocation (its 2 GiB per-block limit, or the cap on a reservation it "
        "never touches) is counted as the error it became, and apart in the last column.",
    ]
    div = summary.get("divergences")
    if div:
        lines += ["", "## Where the two disagree", "",
                  f"{div['calls_compared']} calls compared (same input, source, mode and call). "
                  f"Both returned frames with different timestamps: {div['both_returned_different_pts']}.", "",
                  "framefeed raised, torchcodec returned frames:", ""]
        lines += [f"- {n} x `{key}` (e.g. {div['examples'].get(key, '')})"
                  for key, n in div["framefeed_raised_torchcodec_returned"].items()] or ["- none"]
        missing = summary.get("missing_frames") or {}
        lines += ["", "Of the \"was not produced\" calls above, by a sequential PyAV decode of the same file: "
                  + ("; ".join(f"{k}: {v}" for k, v in missing.items()) or "none") + "."]
        lines += [_HOW_TO_READ]
        lines += ["", "torchcodec raised, framefeed returned frames:", ""]
        lines += [f"- {n} x `{key}`" for key, n in div["torchcodec_raised_framefeed_returned"].items()] or ["- none"]
    lines += ["", "## framefeed failures", ""]
    hits = summary["safety_net_hits"]
    lines += [f"Internal errors caught by the public boundary (`errors.public_api`): {len(hits)}."]
    lines += [f"- `{hit}`" for hit in hits] + [""]
    lines += [f"- {r['outcome']}: `{r['case']}` ({r['damage']}) {r['source']} {r['seek_mode']}: {r['detail'][:300]}"
              for r in failed] or ["None."]
    lines += ["", "## Slowest runs", "", "| case | library | source | mode | seconds | outcome |",
              "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['case']} | {r['library']} | {r['source']} | {r['seek_mode']} | {r['seconds']} | {r['outcome']} |"
              for r in summary["slowest"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
