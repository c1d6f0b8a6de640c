"""`framefeed serve` throughput: 4 client processes against the same requests on an in-process pool.

CPU mode (`--mode cpu`, any machine): H.264 files with B-frames (640x360 by
default, `--size`), random clips of 8 consecutive frames (the same clips for
both contenders, drawn from one seed), each clip one request:
- in-process: one `DecodePool("cpu", sessions=S)` decoding every clip with
  `pool.map` (look-ahead 4 per client's worth, 16);
- service: `framefeed serve --device cpu --sessions S` and 4 client
  processes, each running a quarter of the clips through `client.map`
  (look-ahead 4) over shared memory. Client processes start and connect
  before the clock starts; the run ends when the last client is done.
Every batch is touched (one pixel read) and dropped, which releases its slot.
Target: service clips/s >= 0.85x the in-process pool's, by the median of
the ratios within each run (contenders alternate run by run; one warm-up
run each first). Writes
benchmarks/results/service-cpu.md (and .json).

GPU mode (`--mode gpu`, the device check on an H200): 1080p H.264 files,
16-frame clips, server and pool on cuda:0, 4 clients through CUDA IPC
(asserted: a client that falls back to shared memory fails the run).
Target: service RGB frames/s >= 0.9x the in-process pool's. Then a soak of
`--soak` requests (10,000 by default) of 2-frame clips across the 4 clients,
sampling the device's used memory (`torch.cuda.mem_get_info`, whole device)
every 500 requests: flat means the last sample within 64 MiB of the first
after warm-up. Writes benchmarks/results/service-gpu-<date>.md (and .json).

Usage:
    PYTHONPATH=. nice python benchmarks/service_throughput.py --mode cpu [--runs 5]
    PYTHONPATH=. python benchmarks/service_throughput.py --mode gpu [--runs 3 --soak 10000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "benchmarks" / ".cache" / "service"
RESULTS = REPO / "benchmarks" / "results"
SEED = 2026
CLIENTS = 4
LOOKAHEAD = 4


# -- inputs ----------------------------------------------------------------------------------


def _encode(job: tuple[str, int, int, int, int]) -> str:
    from framefeed.samples import VideoSpec, encode_video, x264_options

    path, width, height, frames, seed = job
    encode_video(path, VideoSpec(width=width, height=height, num_frames=frames, fps=30, seed=seed,
                                 codec_options=x264_options(60)))
    return path


def input_files(count: int, width: int, height: int, frames: int) -> list[str]:
    """`count` H.264 files, encoded once (in parallel) into benchmarks/.cache/service/."""
    from concurrent.futures import ProcessPoolExecutor

    CACHE.mkdir(parents=True, exist_ok=True)
    files = [str(CACHE / f"h264_{width}x{height}_{frames}f_v{index}.mp4") for index in range(count)]
    missing = [(path, width, height, frames, index) for index, path in enumerate(files) if not os.path.exists(path)]
    if missing:
        print(f"encoding {len(missing)} file(s) of {frames} frames at {width}x{height}...", flush=True)
        with ProcessPoolExecutor(max(1, min(len(missing), (os.cpu_count() or 2) // 2))) as encoders:
            list(encoders.map(_encode, missing))
    return files


def clip_requests(files: list[str], frames: int, clips: int, per_clip: int) -> list[dict]:
    rng = random.Random(SEED)
    requests = []
    for _ in range(clips):
        path = rng.choice(files)
        start = rng.randrange(0, frames - per_clip + 1)
        requests.append({"source": path, "indices": list(range(start, start + per_clip))})
    return requests


# -- the client process -------------------------------------------------------------------------


def client_main(address: str, transport: str) -> None:
    """Connect, say "ready", then for each "go FILE" line on stdin run that
    JSON list of requests and print {"start", "end", "frames", "transport"}."""
    import torch

    from framefeed.client import connect
    from framefeed.pool import DecodeRequest

    client = connect(address, transport=transport, timeout=300)
    print(json.dumps({"ready": True, "transport": client.transport}), flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command != "go":
            break
        requests = [DecodeRequest(r["source"], indices=r["indices"]) for r in json.loads(Path(argument).read_text())]
        start, cpu = time.monotonic(), time.process_time()
        frames = 0
        samples = []
        for count, batch in enumerate(client.map(requests, lookahead=LOOKAHEAD), 1):
            batch.data[0, 0, 0, 0].item()  # touch the frames (waits for the IPC event on CUDA)
            frames += int(batch.pts_seconds.numel())
            del batch
            if transport == "cuda" and count % 500 == 0:
                free, total = torch.cuda.mem_get_info()
                samples.append(total - free)
        end = time.monotonic()
        print(json.dumps({"start": start, "end": end, "frames": frames, "used_samples": samples,
                          "cpu": time.process_time() - cpu}), flush=True)
    client.close()


class Clients:
    """`CLIENTS` client processes, started and connected once."""

    def __init__(self, address: str, transport: str) -> None:
        command = [sys.executable, __file__, "--client", address, "--transport", transport]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        self.processes = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
                          for _ in range(CLIENTS)]
        for process in self.processes:
            hello = json.loads(process.stdout.readline())
            if hello.get("transport") != transport:
                raise RuntimeError(f"a client got transport {hello.get('transport')!r}, not {transport!r}")

    def run(self, requests: list[dict], folder: Path, server_pid: int) -> tuple[float, float, int, list[list[int]]]:
        """Split `requests` round-robin over the clients; (wall seconds, CPU seconds of the
        server and the clients, frames, memory samples)."""
        server_cpu = cpu_seconds(server_pid)
        for index, process in enumerate(self.processes):
            share = folder / f"share{index}.json"
            share.write_text(json.dumps(requests[index::CLIENTS]))
            process.stdin.write(f"go {share}\n")
            process.stdin.flush()
        reports = [json.loads(process.stdout.readline()) for process in self.processes]
        seconds = max(r["end"] for r in reports) - min(r["start"] for r in reports)
        cpu = cpu_seconds(server_pid) - server_cpu + sum(r["cpu"] for r in reports)
        return seconds, cpu, sum(r["frames"] for r in reports), [r["used_samples"] for r in reports]

    def close(self) -> None:
        for process in self.processes:
            try:
                process.stdin.write("stop\n")
                process.stdin.close()
            except OSError:
                pass
            process.wait(60)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pool_run(pool, requests: list[dict]) -> tuple[float, float, int]:
    from framefeed.pool import DecodeRequest

    items = [DecodeRequest(r["source"], indices=r["indices"]) for r in requests]
    cpu = time.process_time()
    start = time.monotonic()
    frames = 0
    for batch in pool.map(items, lookahead=LOOKAHEAD * CLIENTS):
        batch.data[0, 0, 0, 0].item()
        frames += int(batch.pts_seconds.numel())
        del batch
    return time.monotonic() - start, time.process_time() - cpu, frames


# -- the benchmark ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from framefeed.pool import DecodePool
    from framefeed.serve.launch import ServerProcess

    gpu = args.mode == "gpu"
    device = "cuda:0" if gpu else "cpu"
    width, height = (1920, 1080) if gpu else tuple(int(v) for v in args.size.split("x"))
    files = input_files(args.files, width, height, args.frames)
    requests = clip_requests(files, args.frames, args.clips, args.clip_frames)
    sessions = args.sessions or (None if gpu else 2)
    server_args = ["--device", device, "--allow-root", str(CACHE), "--memory-budget", args.memory_budget,
                   "--socket", str(Path(tempfile.mkdtemp(prefix="framefeed-bench-")) / "serve.sock")]
    if sessions:
        server_args += ["--sessions", str(sessions)]
    transport = "cuda" if gpu else "shm"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    args.load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {"in-process pool": [], "service, 4 clients": []}
    cpu: dict[str, list[float]] = {name: [] for name in times}
    frames: dict[str, int] = {}
    soak: dict = {}
    with ServerProcess(server_args, env=env) as server, tempfile.TemporaryDirectory() as folder:
        clients = Clients(server.address, transport)
        pool = DecodePool(device, sessions=sessions)
        try:
            for run_index in range(args.runs + 1):  # run 0 warms both up
                for name in (list(times) if run_index % 2 == 0 else list(reversed(times))):
                    if name == "in-process pool":
                        seconds, cpu_used, count = pool_run(pool, requests)
                    else:
                        seconds, cpu_used, count, _ = clients.run(requests, Path(folder), server.pid)
                    frames[name] = count
                    if run_index:
                        times[name].append(seconds)
                        cpu[name].append(cpu_used)
                    print(f"run {run_index} {name}: {seconds:.2f} s, CPU {cpu_used:.2f} s, {count} frames", flush=True)
            pool.close()
            if gpu and args.soak:
                small = clip_requests(files, args.frames, args.soak, 2)
                seconds, _, count, samples = clients.run(small, Path(folder), server.pid)
                flat = [s for share in samples for s in share[1:]]  # after each client's first 500: warm
                soak = {"requests": args.soak, "seconds": seconds, "frames": count,
                        "used_bytes_first": flat[0] if flat else None, "used_bytes_max": max(flat, default=None),
                        "used_bytes_last": flat[-1] if flat else None}
                soak["flat"] = bool(flat) and max(flat) - min(flat) <= 64 << 20
            stats = server_stats(server.address)
        finally:
            clients.close()
            pool.close()
    args.load_after = os.getloadavg()[0]
    report = render(args, device, width, height, times, cpu, frames, soak, stats)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "service-cpu" if not gpu else f"service-gpu-{dt.date.today().isoformat()}"
    (RESULTS / f"{name}.md").write_text(report)
    from _targets import RoundRatios

    (RESULTS / f"{name}.json").write_text(json.dumps(
        {"device": device, "size": [width, height], "runs": times, "cpu_seconds": cpu, "frames": frames, "soak": soak,
         "server_stats": stats, "args": vars(args),
         "service_over_pool": RoundRatios.of("rate", times["service, 4 clients"], times["in-process pool"]).as_json(
             0.9 if gpu else 0.85),
         "service_over_pool_per_cpu_second": RoundRatios.of("rate", cpu["service, 4 clients"],
                                                            cpu["in-process pool"]).as_json()},
        indent=2, default=str) + "\n")
    print(report)
    return 0


def server_stats(address: str) -> dict:
    from framefeed.client import connect

    with connect(address) as client:
        stats = client.stats()
    pool = stats["devices"][next(iter(stats["devices"]))]["pool"]
    return {"frames_decoded": pool["frames_decoded"], "frames_returned": pool["frames_returned"],
            "requests": stats["requests"], "busy_timeouts": stats["busy_timeouts"],
            "leases_after": stats["leases"]}


def render(args, device, width, height, times, cpu, frames, soak, stats) -> str:
    import torch
    from _targets import TARGET_HEADER, RoundRatios

    gpu = args.mode == "gpu"
    # Ratios within each run (the two contenders alternate run by run): same clips, inverse times.
    figure = RoundRatios.of("rate", times["service, 4 clients"], times["in-process pool"])
    cpu_figure = RoundRatios.of("rate", cpu["service, 4 clients"], cpu["in-process pool"])
    target = 0.9 if gpu else 0.85
    unit = "RGB frames/s" if gpu else "clips/s"
    lines = [
        f"# framefeed serve throughput ({device})",
        "",
        f"Date: {dt.date.today().isoformat()}; machine: {platform.machine()}, {os.cpu_count()} cores; "
        f"torch {torch.__version__}; python {platform.python_version()}; load average {args.load_before:.1f} "
        f"before, {args.load_after:.1f} after (other processes share the machine: the spread of each "
        "contender's runs shows how much)",
        f"Workload: {args.clips} clips of {args.clip_frames} consecutive frames drawn at random (seed {SEED}) from "
        f"{args.files} H.264 files of {args.frames} frames at {width}x{height} (keyframe every 60, B-frames), "
        f"each clip one request; pool and server with {args.sessions or ('default' if gpu else 2)} sessions; "
        f"{CLIENTS} client processes with look-ahead {LOOKAHEAD} each vs `pool.map` with look-ahead "
        f"{LOOKAHEAD * CLIENTS}. Medians of {args.runs} alternating runs after a warm-up run each.",
        "",
        "| contender | median s | min-max s | clips/s | frames/s | CPU s per run | clips per CPU s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, values in times.items():
        median, cpu_median = statistics.median(values), statistics.median(cpu[name])
        lines.append(f"| {name} | {median:.2f} | {min(values):.2f}-{max(values):.2f} | "
                     f"{args.clips / median:.1f} | {frames[name] / median:.0f} | {cpu_median:.2f} | "
                     f"{args.clips / cpu_median:.1f} |")
    lines += ["", "Ratios taken within each run (the contenders alternate run by run); a target passes on their "
              "median.", "", *TARGET_HEADER,
              figure.row(f"service / in-process {unit}", target),
              "", f"Service / in-process clips per CPU second (server + clients vs the pool's process), per run: "
              f"**{cpu_figure.text()}** (ratio of medians {cpu_figure.ratio_of_medians:.3f}x). On a machine shared "
              "with other work, the wall-clock figure favours the five processes of the service (the scheduler "
              "gives more runnable threads more CPU); the CPU-time figure is the cost of the service itself.", "",
              f"Server counters after the runs: {json.dumps(stats)}"]
    if soak:
        lines += ["", f"Soak: {soak['requests']} requests of 2 frames in {soak['seconds']:.1f} s; device memory "
                  f"used (whole GPU) first {soak['used_bytes_first']}, max {soak['used_bytes_max']}, last "
                  f"{soak['used_bytes_last']} bytes: {'flat' if soak['flat'] else 'NOT flat'} (within 64 MiB)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--frames", type=int, default=300, help="frames per file")
    parser.add_argument("--size", default="640x360", help="CPU mode frame size (GPU mode: 1920x1080)")
    parser.add_argument("--clips", type=int, default=None, help="clips per run (default: 96 cpu, 400 gpu)")
    parser.add_argument("--clip-frames", type=int, default=None, help="frames per clip (default: 8 cpu, 16 gpu)")
    parser.add_argument("--sessions", type=int, default=None, help="pool/server sessions (default: 2 cpu, "
                        "the NVDEC engine count on gpu)")
    parser.add_argument("--memory-budget", default=None, help="server budget (default 512MiB cpu, 8GiB gpu)")
    parser.add_argument("--soak", type=int, default=10_000, help="GPU mode: requests in the memory soak (0: none)")
    parser.add_argument("--client", metavar="ADDRESS", help=argparse.SUPPRESS)
    parser.add_argument("--transport", default="shm", help=argparse.SUPPRESS)
    parser.add_argument("--prepare-only", action="store_true", help="encode the inputs and stop")
    args = parser.parse_args(argv)
    if args.prepare_only:
        size = (1920, 1080) if args.mode == "gpu" else tuple(int(v) for v in args.size.split("x"))
        input_files(args.files, size[0], size[1], args.frames)
        return 0
    if args.client:
        client_main(args.client, args.transport)
        return 0
    gpu = args.mode == "gpu"
    if gpu:
        import torch

        if not torch.cuda.is_available():
            print("service_throughput --mode gpu: torch sees no CUDA GPU; run it on the GPU machine", file=sys.stderr)
            return 2
    args.clips = args.clips or (400 if gpu else 96)
    args.clip_frames = args.clip_frames or (16 if gpu else 8)
    args.memory_budget = args.memory_budget or ("8GiB" if gpu else "512MiB")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
