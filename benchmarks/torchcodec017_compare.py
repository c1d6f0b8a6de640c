"""framefeed against torchcodec 0.17, call for call, outside CI.

torchcodec 0.14 and later are built against the CUDA build of torch, which
installs (about 3 GB) and runs on a machine without a GPU; CI keeps torchcodec
0.13 (CPU build). This script builds such an environment if it is missing, from
the package registry:

    python -m venv VENV
    VENV/bin/pip install torch==2.13.0 torchcodec==0.17.0 torchvision==0.28.0 av==18.1.0 numpy pillow 'pytest<9'

(pip's configuration is ignored: a local wheel folder holding torch's CPU build
would otherwise win, and torchcodec 0.17 cannot load with it; torchcodec loads
the system FFmpeg libraries, e.g. Debian's `ffmpeg` package.) framefeed itself
is not installed there: it runs from this checkout (`PYTHONPATH`).

Then, in that environment:

1. framefeed's comparisons: `tests/test_torchcodec_compat.py` (the call-for-call
   file CI runs against 0.13) and the torchcodec comparisons of
   `tests/test_output_dtype.py` (every `output_dtype`, both seek modes).
2. With `--torchcodec-tests DIR` (a torchcodec checkout: its `test/` folder and
   resources), torchcodec's own public video tests, twice: on torchcodec
   (the baseline) and on framefeed through `torchcodec_shim.py`, which swaps
   torchcodec's public video API for framefeed's. A test that kills the
   process is left out and named, and the run goes on.

It writes `benchmarks/results/torchcodec017-compare.md` (date, versions, pass
and fail counts, each failure's first line).

    python benchmarks/torchcodec017_compare.py --venv ~/.cache/framefeed/tc017 \\
        --torchcodec-tests ~/src/torchcodec
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ["torch==2.13.0", "torchcodec==0.17.0", "torchvision==0.28.0", "av==18.1.0", "numpy", "pillow",
            "pytest<9"]
# torchcodec's public video tests: the decoder (its video half), samplers, policies,
# frame dataclasses and decoder transforms (the public op tests).
OWN_TESTS = ["test/test_decoders.py", "test/test_samplers.py", "test/test_policy.py",
             "test/test_frame_dataclasses.py", "test/test_transform_ops.py::TestPublicVideoDecoderTransformOps"]
OWN_SELECTION = ("TestVideoDecoder or (TestDecoder and VideoDecoder) or test_samplers or test_policy "
                 "or frame_dataclasses or TestPublicVideoDecoderTransformOps")
# Why known failures on framefeed fail (matched on the test id).
KNOWN = {
    "TestDecoder::test_create": "isinstance check against torchcodec's private `_core._metadata.StreamMetadata` "
                                "class, which framefeed's metadata is not",
    "test_random_crop_reusable_objects": "calls `RandomCrop._make_transform_spec`, a private torchcodec method",
    "test_discard_first_keyframe": "approximate mode on a file whose header promises 30 frames of which 25 "
                                   "exist: torchcodec raises for `decoder[:]`, framefeed returns frame 24 for "
                                   "indices 25-29 (a framefeed defect of the approximate timeline)",
}


def build_venv(venv: Path) -> None:
    print(f"building {venv} (about 3 GB from the registry) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = dict(os.environ, PIP_CONFIG_FILE=os.devnull, PIP_FIND_LINKS="")
    constraints = venv / "constraints.txt"
    constraints.write_text("torch==2.13.0\n")
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-c", str(constraints), *PACKAGES], check=True,
                   env=env)


def versions(python: Path) -> dict[str, str]:
    code = ("import json, torch, torchcodec, torchvision, av; from torchcodec._core import "
            "get_ffmpeg_library_versions as v; print(json.dumps({'torch': torch.__version__, "
            "'torchcodec': torchcodec.__version__, 'torchvision': torchvision.__version__, 'av': av.__version__, "
            "'torchcodec FFmpeg': str(v()), 'PyAV FFmpeg (framefeed)': str(av.library_versions)}))")
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout
    import json

    return json.loads(out.strip().splitlines()[-1])


def run_pytest(python: Path, args: list[str], cwd: Path, env: dict[str, str], report: Path,
               timeout: float, reuse: bool = False) -> tuple[dict[str, int], list[tuple[str, str]], list[str]]:
    """pytest with a JUnit report; a test that kills the process is deselected
    and the run repeated. (counts, failures (id, first line), crashed ids).
    `reuse`: read the report an earlier run left instead of running."""
    crashed: list[str] = []
    for _ in range(0 if reuse and report.exists() else 10):
        command = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-v", "-o", "addopts=",
                   f"--junitxml={report}", *args, *[f"--deselect={c}" for c in crashed]]
        result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        if result.returncode >= 0 and result.returncode not in (134, 139) and report.exists():
            break
        started = re.findall(r"^(\S+::\S+) ", result.stdout, re.M)
        if not started:
            raise RuntimeError(f"pytest died before any test ran:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        crashed.append(started[-1])
        print(f"  crashed in {started[-1]}: left out, running again", flush=True)
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    failures = []
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '').replace('.', '/')}::{case.get('name')}"
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if problem is not None:
            counts["failed" if problem.tag == "failure" else "errors"] += 1
            first = (problem.get("message") or problem.text or "").strip().splitlines()
            failures.append((name, first[0][:300] if first else ""))
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts, failures, crashed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, default=Path.home() / ".cache" / "framefeed" / "torchcodec017-venv")
    parser.add_argument("--torchcodec-tests", type=Path, default=None,
                        help="a torchcodec checkout (its test/ folder) to run torchcodec's own tests from")
    parser.add_argument("--checkout-description", default="",
                        help="which torchcodec commit the tests come from (for the report)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "torchcodec017-compare.md")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--reuse-junit", action="store_true",
                        help="rewrite the report from the JUnit files of the last run (no tests run)")
    options = parser.parse_args()

    python = options.venv / "bin" / "python"
    if not python.exists():
        build_venv(options.venv)
    found = versions(python)
    work = options.venv / "framefeed-junit"  # the JUnit reports stay beside the environment, outside the tree
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests"), str(REPO / "benchmarks")]))

    print("framefeed's comparisons ...", flush=True)
    # -k torchcodec: every test of the compat file, the torchcodec comparisons of the other.
    ours = run_pytest(python, ["tests/test_torchcodec_compat.py", "tests/test_output_dtype.py", "-k", "torchcodec"],
                      REPO, env, work / "framefeed.xml", options.timeout, options.reuse_junit)
    own = {}
    if options.torchcodec_tests is not None:
        for label, shim in (("torchcodec 0.17", "0"), ("framefeed (shim)", "1")):
            print(f"torchcodec's own tests on {label} ...", flush=True)
            own[label] = run_pytest(python, ["-p", "torchcodec_shim", *OWN_TESTS, "-k", OWN_SELECTION],
                                    options.torchcodec_tests, dict(env, FRAMEFEED_SHIM=shim),
                                    work / f"own-{shim}.xml", options.timeout, options.reuse_junit)
    write_report(options.out, found, ours, own, options)
    print(f"wrote {options.out}")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{value} {key}" for key, value in counts.items() if value or key in ("passed", "failed"))


def write_report(out: Path, found: dict[str, str], ours: tuple, own: dict[str, tuple], options: argparse.Namespace
                 ) -> None:
    today = datetime.date.today().isoformat()
    lines = [f"# framefeed against torchcodec 0.17 ({today})", "",
             "Made by `python benchmarks/torchcodec017_compare.py` (see its docstring): the same calls on both",
             "libraries, in an environment with the CUDA build of torch on a machine without a GPU.", "",
             "| package | version |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in found.items()]
    counts, failures, crashed = ours
    lines += ["", "## framefeed's call-for-call comparisons", "",
              "`tests/test_torchcodec_compat.py` (CI runs it against torchcodec 0.13) and the torchcodec",
              f"comparisons of `tests/test_output_dtype.py`: {_counts(counts)}.", ""]
    lines += [f"- FAILED `{name}`: {first}" for name, first in failures]
    lines += [f"- CRASHED (left out) `{name}`" for name in crashed]
    lines += ["Frames compare bit for bit in every `output_dtype` (8- and 10-bit, 4:2:0 and 4:4:4, both",
              "ranges, rotation, odd size), except 8-bit 4:2:2 in float32, where the FFmpeg torchcodec",
              "loads is wrong (`TORCHCODEC_WRONG` in `tests/test_output_dtype.py` checks that framefeed",
              "is right there and torchcodec still wrong)."]
    if own:
        described = options.checkout_description or str(options.torchcodec_tests)
        lines += ["", "## torchcodec's own public video tests", "",
                  f"Test files from {described}: `{' '.join(OWN_TESTS)}`,",
                  f"`-k \"{OWN_SELECTION}\"`; the framefeed run swaps torchcodec's public video",
                  "API for framefeed's (`benchmarks/torchcodec_shim.py`). CUDA tests skip (no GPU).", "",
                  "| run on | result |", "| --- | --- |"]
        lines += [f"| {label} | {_counts(result[0])}"
                  + (f", {len(result[2])} crashed (left out)" if result[2] else "") + " |"
                  for label, result in own.items()]
        if not any(result[2] for result in own.values()):
            lines += ["", "No test crashed the process (issue #20's memory-safety fixes are in this run), so none "
                      "is left out."]
        for label, (_, failures, crashed) in own.items():
            if failures or crashed:
                lines += ["", f"Failures on {label}:", ""]
            for name, first in failures:
                why = next((reason for key, reason in KNOWN.items() if key in name), first)
                lines.append(f"- `{name}`: {why}")
            lines += [f"- `{name}`: crashed the process (left out)" for name in crashed]
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
