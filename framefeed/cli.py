"""The `framefeed` command: `info` (stream metadata), `bench` (speed
against the installed peers), `serve` (the decode service) and `doctor`
(`framefeed.doctor`: what a new machine offers).

Bad arguments and bad input (a video that is missing, unreadable, not a
video or damaged) exit with code 2 and one line on stderr naming the file and
the cause; `--debug` prints the traceback above that line. Warnings print as
one line each. `run_command` is the one place where exceptions become exit
codes: a new command adds its parser and an entry in `COMMANDS`."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _usage_error(message: str) -> int:
    print(f"framefeed: error: {message}", file=sys.stderr)
    return 2


class InputError(Exception):
    """A file a command was given cannot be used: missing, unreadable, not a
    video, or damaged. `run_command` prints it as one line and exits with 2."""

    def __init__(self, path: str | os.PathLike, cause: BaseException) -> None:
        super().__init__(path, cause)
        self.path = os.fspath(path)
        self.cause = cause

    def __str__(self) -> str:
        if isinstance(self.cause, FileNotFoundError):
            return f"no such video file: {self.path}"
        return f"cannot read {self.path}: {_reason(self.cause)}"


def _reason(error: BaseException) -> str:
    """The cause of an input error in a few words (no traceback, no path twice)."""
    from framefeed.errors import DecodingError, VideoOpenError, ffmpeg_reason

    if isinstance(error, (VideoOpenError, DecodingError, UserWarning)):
        return str(error)  # framefeed's own words, which say what is wrong
    if isinstance(error, IsADirectoryError):
        return "it is a directory, not a video file"
    if isinstance(error, OSError) and error.strerror and type(error).__module__ == "builtins":
        return error.strerror
    if type(error).__module__.split(".")[0] == "av":
        return f"{ffmpeg_reason(error)} ({type(error).__name__} from FFmpeg)"
    return f"{type(error).__name__}: {error}"


@contextlib.contextmanager
def reading(path: str | os.PathLike, *, strict: bool = False) -> Iterator[None]:
    """Turn what reading the video `path` raises into an `InputError` naming
    it: OSError (missing, unreadable), framefeed's `VideoOpenError` and
    `DecodingError`, PyAV's errors. `strict`: a warning about the file (a
    damaged packet, a truncated stream) is an error too."""
    import av

    from framefeed.errors import DecodingError, VideoOpenError

    with warnings.catch_warnings(record=strict) as caught:
        if strict:
            warnings.simplefilter("always")
        try:
            yield
        except (OSError, VideoOpenError, DecodingError, av.error.FFmpegError) as error:
            raise InputError(path, error) from error
    problems = [w.message for w in caught or () if issubclass(w.category, UserWarning)]
    if problems:
        raise InputError(path, problems[0])  # type: ignore[arg-type]


def run_command(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run one command: its exit code; bad input is one line on stderr and
    exit code 2 (with `--debug`, the traceback first); warnings are one line each."""
    name = f"framefeed {args.command}"

    def one_line(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        print(f"{name}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        if not args.debug:
            warnings.showwarning = one_line  # type: ignore[assignment]
        try:
            return command(args)
        except (InputError, OSError) as error:
            if isinstance(error, OSError) and error.filename is None:
                raise  # not about a file the user named: a bug or the system, with its traceback
            if args.debug:
                traceback.print_exc()
            text = str(error) if isinstance(error, InputError) else f"{error.filename}: {_reason(error)}"
            print(f"{name}: error: {text}", file=sys.stderr)
            return 2


def _parser() -> _Parser:
    from framefeed.bench.isolation import DEFAULT_TIMEOUT_SECONDS
    from framefeed.bench.workloads import DEFAULT_WORKLOADS, WORKLOADS

    parser = _Parser(prog="framefeed", description="Frame-exact video decoding into PyTorch tensors.")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error, not only its line")
    # Also accepted after the command (`framefeed info --debug X`); SUPPRESS keeps the main parser's value.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="print the traceback of an error, not only its line")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    info = commands.add_parser("info", parents=[common], help="print a video's stream metadata and decode a few frames")
    info.add_argument("video", nargs="?", help="video file (default: a generated sample clip)")
    info.add_argument("--seek-mode", choices=["exact", "approximate"], default="exact")
    info.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")

    bench = commands.add_parser(
        "bench", parents=[common], help="time framefeed against the installed peers",
        description="Time decoder creation, sequential and random access and the clip samplers on "
        "framefeed and every installed peer (torchcodec, PyAV, decord, PyNvVideoCodec), "
        "interleaved, with warm-up, reporting medians. Without VIDEO it generates its default clips.",
    )
    bench.add_argument("videos", nargs="*", metavar="VIDEO", help="video files (default: generated clips)")
    bench.add_argument("--workload", action="append", choices=sorted(WORKLOADS), metavar="NAME",
                       help=f"workload to run (repeatable; default: {', '.join(DEFAULT_WORKLOADS)}; "
                       f"all: {', '.join(sorted(WORKLOADS))})")
    bench.add_argument("--runs", type=_positive_int, default=3, help="timed runs per measurement (default 3)")
    bench.add_argument("--warmup", type=_non_negative_int, default=0,
                       help="untimed runs before each workload's timed ones (default 0: every contender "
                       "always gets one untimed run per clip, and medians absorb first-run effects)")
    bench.add_argument("--device", action="append", metavar="DEVICE",
                       help="cpu, cuda or cuda:N (repeatable; default: cpu, plus cuda when available)")
    bench.add_argument("--threads", type=_non_negative_int, default=1,
                       help="CPU decoding threads for every CPU contender; 0 lets FFmpeg choose (default 1)")
    bench.add_argument("--peers", default=None,
                       help="comma-separated libraries to include (default: all installed), "
                       "e.g. framefeed,torchcodec")
    bench.add_argument("--timeout", type=_positive_float, default=DEFAULT_TIMEOUT_SECONDS, metavar="SECONDS",
                       help="longest one run of one contender may take before its process is killed and its "
                       f"row says 'timed out' (default {DEFAULT_TIMEOUT_SECONDS:g})")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON (schema framefeed-bench/1)")
    bench.add_argument("--plot", metavar="FILE.png", help="also write a bar chart (needs matplotlib)")
    bench.add_argument("--cache-dir", help="where generated clips are kept (default: $FRAMEFEED_CACHE or "
                       "~/.cache/framefeed)")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_serve_parser(commands, common)
    # Listed here; its options are framefeed.doctor's own (main() hands the arguments over).
    commands.add_parser("doctor", help="check this machine: GPU, driver, NVDEC, versions, CPU-vs-NVDEC parity, "
                        "throughput (framefeed doctor --help)", add_help=False)
    return parser


def _add_serve_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    serve = commands.add_parser(
        "serve", parents=[common], help="run the decode service (clients: framefeed.client.connect)",
        description="Decode for many client processes: a DecodePool per device, frames handed over "
        "through shared memory or CUDA IPC. Prints one line with its address, stops on SIGTERM/SIGINT.",
    )
    serve.add_argument("--device", action="append", metavar="DEVICE",
                       help="cpu, cuda or cuda:N (repeatable; default: cuda when available, else cpu)")
    where = serve.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH", help="Unix socket, created 0600 in a folder only you or root may "
                       "change (made 0700 if missing; default: $FRAMEFEED_SOCKET or /tmp/framefeed-UID/serve.sock)")
    where.add_argument("--port", type=_non_negative_int, metavar="N", help="TCP port instead (0: any free one); "
                       "clients must hold the --token-file secret")
    serve.add_argument("--host", default="127.0.0.1", help="TCP address with --port (default 127.0.0.1)")
    serve.add_argument("--allow-uid", action="append", type=_non_negative_int, metavar="UID",
                       help="also admit this user's processes on the Unix socket (repeatable; default: only "
                       "the server's own uid)")
    serve.add_argument("--allow-gid", action="append", type=_non_negative_int, metavar="GID",
                       help="also admit processes with this group (effective or supplementary; repeatable)")
    serve.add_argument("--token-file", metavar="PATH", help="TCP secret clients must prove they hold, created "
                       "0600 if missing (default: $FRAMEFEED_TOKEN_FILE or /tmp/framefeed-UID/serve.token)")
    serve.add_argument("--allow-unauthenticated-tcp", action="store_true",
                       help="DANGEROUS: serve TCP without a token, to anyone who can connect")
    serve.add_argument("--allow-root", action="append", metavar="DIR", required=True,
                       help="folder whose files clients may read (repeatable; symlinks and .. are resolved first)")
    serve.add_argument("--memory-budget", default="1GiB", metavar="SIZE",
                       help="memory per device for frames leased to clients, e.g. 512MiB (default 1GiB)")
    serve.add_argument("--client-memory", metavar="SIZE",
                       help="most memory one client may hold in leased frames (default: half the budget)")
    serve.add_argument("--client-leases", type=_positive_int, default=4096, metavar="N",
                       help="most slots one client may hold (default 4096)")
    serve.add_argument("--max-clients", type=_positive_int, default=1024, metavar="N",
                       help="most client sessions at once (default 1024)")
    serve.add_argument("--refuse-hard-links", action="store_true",
                       help="refuse files with more than one hard link (a link under a root to a file outside it)")
    serve.add_argument("--sessions", type=_positive_int, help="decode sessions per device (default: the pool's)")
    serve.add_argument("--lease-timeout", type=_positive_float, default=10.0, metavar="SECONDS",
                       help="a client silent this long is dropped and its slots return (default 10)")
    serve.add_argument("--request-timeout", type=_positive_float, default=60.0, metavar="SECONDS",
                       help="longest a request waits for decoders or memory before failing as busy (default 60)")
    serve.add_argument("--shutdown-timeout", type=_positive_float, default=10.0, metavar="SECONDS",
                       help="time in-flight requests get to finish on SIGTERM/SIGINT (default 10)")
    serve.add_argument("--max-request-bytes", default="4MiB", metavar="SIZE",
                       help="largest request accepted (default 4MiB)")
    serve.add_argument("--metrics-port", type=_non_negative_int, metavar="N",
                       help="serve Prometheus /metrics on this port (0: any free one; default: off)")
    serve.add_argument("--metrics-host", default="127.0.0.1", help="address for /metrics (default 127.0.0.1)")


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["doctor"]:
        from framefeed.doctor import main as doctor

        return doctor(arguments[1:])
    args = _parser().parse_args(arguments)
    return run_command(COMMANDS[args.command], args)


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from framefeed.serve import parse_size, require_serve_dependencies

    try:
        require_serve_dependencies()
    except ImportError as error:
        return _usage_error(str(error))
    from framefeed.serve._server import serve
    from framefeed.serve._service import ServeConfig
    from framefeed.serve.protocol import Address, default_socket_path

    try:
        budget, max_request = parse_size(args.memory_budget), parse_size(args.max_request_bytes)
        client_memory = None if args.client_memory is None else parse_size(args.client_memory)
    except ValueError as error:
        return _usage_error(str(error))
    if args.port is None and (args.token_file or args.allow_unauthenticated_tcp):
        return _usage_error("--token-file and --allow-unauthenticated-tcp apply to --port (TCP) only")
    if args.device:
        devices = args.device
    else:
        import torch

        devices = ["cuda"] if torch.cuda.is_available() else ["cpu"]
    address = Address(host=args.host, port=args.port) if args.port is not None \
        else Address(path=os.path.abspath(args.socket or default_socket_path()))
    config = ServeConfig(devices=devices, allow_roots=args.allow_root, memory_budget=budget,
                         lease_timeout=args.lease_timeout, request_timeout=args.request_timeout,
                         shutdown_timeout=args.shutdown_timeout, max_request_bytes=max_request,
                         sessions=args.sessions, allow_uids=args.allow_uid or (), allow_gids=args.allow_gid or (),
                         client_memory=client_memory, client_leases=args.client_leases,
                         max_clients=args.max_clients, refuse_hard_links=args.refuse_hard_links)
    metrics = None if args.metrics_port is None else (args.metrics_host, args.metrics_port)
    try:
        return asyncio.run(serve(config, address, metrics=metrics, token_file=args.token_file,
                                 allow_unauthenticated_tcp=args.allow_unauthenticated_tcp))
    except (ValueError, OSError) as error:  # a bad folder, socket path, port or token file: the user's input
        if args.debug:
            traceback.print_exc()
        print(f"framefeed serve: error: {error}", file=sys.stderr)
        return 2
    except (MemoryError, ImportError, RuntimeError) as error:
        if args.debug:
            traceback.print_exc()
        print(f"framefeed serve: error: {error}", file=sys.stderr)
        return 1


def _info(args: argparse.Namespace) -> int:
    from framefeed import VideoDecoder
    from framefeed.samples import sample_video

    video = args.video
    if video is None:
        video = sample_video()
        print(f"(no VIDEO given: using the generated sample {video})")
    with reading(video):  # a damaged file that still decodes: described, with one warning line per problem
        decoder = VideoDecoder(video, seek_mode=args.seek_mode, device=args.device)
        print(decoder.metadata, end="")
        print(f"cpu_fallback: {decoder.cpu_fallback}")
        picks = sorted({0, len(decoder) // 2, len(decoder) - 1})
        batch = decoder.get_frames_at(picks)
    print(f"decoded frames {picks}: data {tuple(batch.data.shape)} {batch.data.dtype} on {batch.data.device}, "
          f"pts {[round(p, 6) for p in batch.pts_seconds.tolist()]} s")
    return 0


# What `framefeed bench` needs beyond framefeed's own dependencies, and where it comes from.
BENCH_EXTRA = "pip install 'framefeed[bench]'"


def _missing_module(name: str) -> bool:
    try:
        importlib.import_module(name)
    except Exception:  # ImportError, or a broken install raising anything
        return True
    return False


def _bench(args: argparse.Namespace) -> int:
    # rich draws the table and the progress bar; it comes with the bench extra,
    # which a benchmark needs anyway for the peers it compares against.
    if _missing_module("rich"):
        return _dependency_error(f"framefeed bench needs the 'rich' package for its table: {BENCH_EXTRA}")
    if args.plot and _missing_module("matplotlib"):
        return _dependency_error(f"--plot needs the 'matplotlib' package: {BENCH_EXTRA}")

    import torch

    from framefeed.bench import clips as clip_module
    from framefeed.bench.contenders import all_contenders
    from framefeed.bench.report import render_table, to_json, write_json, write_plot
    from framefeed.bench.runner import run_suite
    from framefeed.bench.workloads import DEFAULT_WORKLOADS, WORKLOADS

    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    for device in devices:
        if device != "cpu" and not (device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
            return _usage_error(f"unknown device {device!r}: use cpu, cuda or cuda:N")
        if device.startswith("cuda") and not torch.cuda.is_available():
            return _usage_error(f"device {device!r} requested but torch sees no CUDA GPU")
    try:
        contenders = all_contenders(devices, threads=args.threads)
    except ValueError as error:  # a plugin module named in the environment is broken
        return _usage_error(str(error))
    if args.peers:
        wanted = {p.strip().lower() for p in args.peers.split(",") if p.strip()}
        known = {c.library for c in contenders}
        unknown = wanted - known
        if unknown:
            return _usage_error(f"unknown peer(s) {', '.join(sorted(unknown))}: known are {', '.join(sorted(known))}")
        contenders = [c for c in contenders if c.library in wanted | {"framefeed"}]
    workloads = [WORKLOADS[name] for name in (args.workload or DEFAULT_WORKLOADS)]

    for output in (args.json, args.plot):
        if output and not os.path.isdir(os.path.dirname(os.path.abspath(output))):
            return _usage_error(f"cannot write {output}: no such directory")
    if args.videos:
        clips = [_user_clip(clip_module, video) for video in args.videos]
    else:
        print("preparing clips...", file=sys.stderr)
        clips = clip_module.default_clips(args.cache_dir)

    show_progress = not args.no_progress and (sys.stderr.isatty() or os.environ.get("FRAMEFEED_PROGRESS"))
    progress = _Progress() if show_progress else None
    try:
        measurements, skipped = run_suite(
            clips, workloads, contenders, runs=args.runs, warmup=args.warmup, clip_warmup=True,
            on_step=progress.step if progress else None, on_total=progress.start if progress else None,
            timeout=args.timeout,
        )
    finally:
        if progress:
            progress.close()
    render_table(measurements, skipped)
    if args.json:
        document = to_json(clips, measurements, skipped, runs=args.runs, warmup=args.warmup, devices=devices)
        write_json(document, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        write_plot(measurements, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _user_clip(clip_module: Any, video: str) -> Any:
    """The user's `video` as a benchmark clip, refused (`InputError`) unless
    framefeed opens it and decodes its first and last frames without a warning:
    timing a damaged file would time its damage."""
    from framefeed import VideoDecoder

    with reading(video, strict=True):
        if os.path.isdir(video):
            raise IsADirectoryError(21, "Is a directory", video)
        with VideoDecoder(video) as decoder:  # first: it names what is wrong with the file
            decoder.get_frames_at(sorted({0, len(decoder) - 1}))
        return clip_module.Clip.from_file(video)


def _dependency_error(message: str) -> int:
    print(f"framefeed: {message}", file=sys.stderr)
    return 1


class _Progress:
    """A rich progress bar on stderr, shown once the number of runs is known."""

    def __init__(self) -> None:
        self._progress: Any = None
        self._task: Any = None

    def start(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        self._progress.start()
        self._task = self._progress.add_task("benchmarking", total=total)

    def step(self, label: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, description=label[:60])

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


# The commands `main` dispatches to (through `run_command`), by name.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"info": _info, "bench": _bench, "serve": _serve}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

