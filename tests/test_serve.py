"""`framefeed serve` and `framefeed.client` on the CPU, the server a real subprocess.

Ground truth is `VideoDecoder` in the client's own process (the corpus tests
hold it against PyAV's sequential decode): frames through the service must
equal it. Faults are real: clients and servers are SIGKILLed, paths escape
through `..` and symlinks, messages are garbage or too large.
"""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

import corpus
from framefeed import VideoDecoder
from framefeed.errors import VideoFileNotFoundError
from framefeed.serve import parse_size
from framefeed.serve._paths import AllowedRoots
from framefeed.serve._slab import SlabAllocator
from framefeed.serve.protocol import Address, parse_address

grpc = pytest.importorskip("grpc", reason="framefeed[serve] not installed")
pytest.importorskip("msgpack", reason="framefeed[serve] not installed")

from framefeed.client import (  # noqa: E402  (after the skip: needs grpc)
    ProtocolError,
    ServiceBusyError,
    ServiceConnectionError,
    connect,
)
from framefeed.serve.launch import ServerProcess, wait_until  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "serve_worker.py"
FILES = ["h264_bframes_long_gop.mp4", "hevc_cra.mp4", "vp9.webm", "vfr.mkv", "rotated_90.mp4",
         "odd_321x241.webm", "h264_bframes.ts", "discard_edit_list.mp4"]
LONG = "h264_bframes_long_gop.mp4"  # 200 frames of 320x240: 46 MB decoded


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    return env


def _start(tmp: Path, *extra: str, name: str = "serve.sock") -> ServerProcess:
    args = ["--device", "cpu", "--allow-root", str(corpus.cache_dir()), "--sessions", "2", *extra]
    if "--port" not in extra:
        args += ["--socket", str(tmp / name)]
    return ServerProcess(args, env=_env())


def _path(name: str) -> str:
    return str(corpus.BY_NAME[name].path)


@pytest.fixture(scope="module")
def server(tmp_path_factory, corpus_files):
    """One server for the module: a 256 MiB budget, a short lease timeout, /metrics on."""
    tmp = tmp_path_factory.mktemp("serve")
    root = tmp / "root"
    root.mkdir()
    process = _start(tmp, "--allow-root", str(root), "--memory-budget", "256MiB", "--lease-timeout", "2",
                     "--max-request-bytes", "1MiB", "--metrics-port", "0")
    process.root = root
    process.tmp = tmp
    yield process
    code = process.stop(signal.SIGTERM, timeout=60)
    assert code == 0, process.stderr_lines[-20:]
    assert not os.path.exists(tmp / "serve.sock"), "the socket is removed on exit"
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"framefeed-serve-{process.pid}-")]


@pytest.fixture
def client(server):
    with connect(server.address, timeout=60) as made:
        yield made


# -- units without a server ------------------------------------------------------------------------


def test_slab_allocator_first_fit_and_merging():
    slab = SlabAllocator(64 * 4096, alignment=4096)
    a, b, c = slab.allocate(4096 * 10), slab.allocate(1), slab.allocate(4096 * 20)
    assert (a, b, c) == (0, 4096 * 10, 4096 * 11)
    assert slab.allocate(4096 * 40) is None  # 33 pages left, 40 asked
    slab.free(b)
    assert slab.allocate(4096) == b  # the hole is reused first
    slab.free(a)
    slab.free(b)
    slab.free(c)
    assert slab.used_bytes == 0 and slab.largest_free() == 64 * 4096  # merged back into one range
    with pytest.raises(KeyError):
        slab.free(a)
    assert not slab.fits_at_all(65 * 4096)


def test_lease_book_gives_room_in_order_of_arrival_not_of_reserving():
    """Requests are planned in threads, so they reach `reserve` in any order:
    the one that arrived first still gets room first."""
    import asyncio

    from framefeed.serve._auth import Peer
    from framefeed.serve._leases import LeaseBook

    page = 4096

    async def scenario():
        book = LeaseBook(lease_timeout=10, client_bytes=8 * page, client_leases=100)
        slab = SlabAllocator(2 * page, alignment=page)
        holder, client = (book.open_session(Peer("unix", pid, 0, 0)) for pid in (1, 2))
        full = [await book.reserve(holder, None, slab, page, 1) for _ in range(2)]
        for lease in full:
            assert book.grant(lease)
        first, second, third = book.arrival(), book.arrival(), book.arrival()
        # Their planning finishes in the order third, first, second.
        waiting = {place: asyncio.ensure_future(book.reserve(client, None, slab, page, 5, place))
                   for place in (third, first, second)}
        await asyncio.sleep(0.01)
        assert book.waiting == 3
        granted = []
        for lease in full:
            book.release(holder, [lease.id])
            await asyncio.sleep(0.01)
            done = [place for place, future in waiting.items() if future.done() and place not in granted]
            assert len(done) == 1, done
            granted += done
            book.grant(waiting[done[0]].result())
        assert granted == [first, second] and not waiting[third].done()
        waiting[third].cancel()

    asyncio.run(scenario())


def test_lease_book_shares_fair_order_and_no_overtaking():
    """Per-client shares, room to the client holding least, and a request
    that does not fit blocks those behind it (it is not starved)."""
    import asyncio

    from framefeed.serve._auth import Peer
    from framefeed.serve._leases import LeaseBook
    from framefeed.serve.protocol import ServiceError

    page = 4096

    async def scenario():
        book = LeaseBook(lease_timeout=10, client_bytes=6 * page, client_leases=100)
        slab = SlabAllocator(8 * page, alignment=page)
        greedy, modest, late = (book.open_session(Peer("unix", pid, 0, 0)) for pid in (1, 2, 3))
        held = [await book.reserve(greedy, None, slab, page, 1) for _ in range(6)]
        for lease in held:
            assert book.grant(lease)
        # Over its share: it waits for its own releases and blocks nobody else.
        over = asyncio.ensure_future(book.reserve(greedy, None, slab, page, 0.3))
        await asyncio.sleep(0)
        mine = await book.reserve(modest, None, slab, 2 * page, 1)
        assert book.grant(mine) and slab.used_bytes == 8 * page
        with pytest.raises(ServiceBusyError, match="already holds 24576 bytes"):
            await over
        # Full: the greedy client (first in line) and the modest one wait; room goes to who holds least.
        book.client_bytes = 8 * page
        first = asyncio.ensure_future(book.reserve(greedy, None, slab, page, 5))
        second = asyncio.ensure_future(book.reserve(modest, None, slab, page, 5))
        await asyncio.sleep(0.01)
        assert book.waiting == 2
        book.release(greedy, [held[0].id])
        await asyncio.sleep(0)
        assert second.done() and not first.done()
        book.release(greedy, [held[1].id])
        await asyncio.sleep(0)
        assert first.done()
        # A large request first in line is not overtaken by a small one.
        book.grant(first.result())
        book.grant(second.result())
        large = asyncio.ensure_future(book.reserve(late, None, slab, 3 * page, 5))
        await asyncio.sleep(0.01)
        small = asyncio.ensure_future(book.reserve(late, None, slab, page, 5))
        book.release(greedy, [held[2].id, held[3].id])  # 2 pages free: the small one would fit
        await asyncio.sleep(0.01)
        assert not large.done() and not small.done()
        book.release(greedy, [held[4].id])
        await asyncio.sleep(0.01)
        assert large.done() and not small.done()
        # A session that ends fails what it waits for and returns what it holds.
        assert book.end_session(late.token) == 0
        with pytest.raises(ServiceError, match="session ended"):
            await small
        book.abandon(large.result())
        with pytest.raises(ServiceBusyError, match="busy: no room"):
            await book.reserve(modest, None, slab, 8 * page, 0.05)
        assert book.end_session(greedy.token) == 2 and book.end_session(modest.token) == 2
        assert slab.used_bytes == 0 and book.waiting == 0

    asyncio.run(scenario())


def test_sizes_and_addresses():
    assert parse_size("1GiB") == 1 << 30 and parse_size("512M") == 512 << 20 and parse_size("4096") == 4096
    with pytest.raises(ValueError, match="invalid size"):
        parse_size("lots")
    assert parse_address("unix:///tmp/a.sock") == Address(path="/tmp/a.sock")
    assert parse_address("/tmp/a.sock") == Address(path="/tmp/a.sock")
    assert parse_address("127.0.0.1:5000") == Address(host="127.0.0.1", port=5000)
    assert parse_address("[::1]:5000").target == "[::1]:5000"
    with pytest.raises(ValueError, match="Invalid server address"):
        parse_address("nowhere")


def test_allowed_roots_resolve_before_checking(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "in.bin").write_bytes(b"x")
    (outside / "secret.bin").write_bytes(b"y")
    (root / "link.bin").symlink_to(outside / "secret.bin")
    (root / "dirlink").symlink_to(outside)
    roots = AllowedRoots([root])
    opened = roots.open(str(root / "in.bin"))
    assert os.read(opened.fd, 1) == b"x"
    opened.close()
    for escape in (outside / "secret.bin", root / ".." / "outside" / "secret.bin", root / "link.bin",
                   root / "dirlink" / "secret.bin"):
        with pytest.raises(PermissionError, match="outside the server's --allow-root"):
            roots.open(str(escape))
    with pytest.raises(PermissionError, match="absolute"):
        roots.open("in.bin")
    with pytest.raises(IsADirectoryError, match="got a directory"):  # as VideoDecoder says it
        roots.open(str(root))
    os.mkfifo(root / "fifo")
    with pytest.raises(PermissionError, match="not a regular file"):
        roots.open(str(root / "fifo"))
    with pytest.raises(VideoFileNotFoundError, match="video file not found"):
        roots.open(str(root / "missing.mp4"))
    with pytest.raises(ValueError, match="not an existing directory"):
        AllowedRoots([tmp_path / "nope"])


def test_socket_folders_others_could_change_are_refused(tmp_path):
    from framefeed.serve._folders import (
        UntrustedFolderError,
        check_client_side,
        prepare_socket_folder,
    )

    made = tmp_path / "made"
    prepare_socket_folder(str(made), shared=False)
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    prepare_socket_folder(str(made), shared=False)  # ours already: fine
    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    with pytest.raises(UntrustedFolderError, match="lets other users replace the socket"):
        prepare_socket_folder(str(open_to_all), shared=False)
    with pytest.raises(UntrustedFolderError, match="may be written by other users"):
        check_client_side(str(open_to_all / "serve.sock"), os.geteuid())
    unsticky = tmp_path / "unsticky"  # others may write the folder above: they could swap ours
    unsticky.mkdir()
    unsticky.chmod(0o777)
    with pytest.raises(UntrustedFolderError, match="no sticky bit"):
        prepare_socket_folder(str(unsticky / "inner"), shared=False)
    unsticky.chmod(0o1777)
    prepare_socket_folder(str(unsticky / "inner"), shared=True)
    assert stat.S_IMODE((unsticky / "inner").stat().st_mode) == 0o711
    if os.geteuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 65534, 65534)
        with pytest.raises(UntrustedFolderError, match="belongs to uid 65534"):
            prepare_socket_folder(str(theirs), shared=False)
        with pytest.raises(UntrustedFolderError, match="belongs to uid 65534"):
            check_client_side(str(theirs / "serve.sock"), 0)
        from framefeed.serve._auth import read_token

        planted = made / "serve.token"  # a secret someone else wrote is not trusted
        planted.write_text("s" * 64)
        os.chown(planted, 65534, 65534)
        with pytest.raises(PermissionError, match="refusing to trust its secret"):
            read_token(str(planted), 0)
        os.chown(planted, 0, 0)
        assert read_token(str(planted), 0) == b"s" * 64


def test_missing_extra_gives_one_line():
    blocker = ("import sys, importlib.abc\n"
               "class Block(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, *a):\n"
               "        if name == 'grpc' or name.startswith('grpc.'): raise ImportError('blocked')\n"
               "sys.meta_path.insert(0, Block())\n"
               "from framefeed.cli import main\n"
               "sys.exit(main(['serve', '--allow-root', '/tmp']))\n")
    result = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, env=_env(), timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "framefeed: error: framefeed serve and framefeed.client need grpcio: pip install 'framefeed[serve]'"]


# -- one server, many clients ------------------------------------------------------------------------


def test_prints_its_address_and_socket_is_owner_only(server):
    assert server.line.startswith("framefeed serve: listening on unix://")
    mode = os.stat(server.tmp / "serve.sock").st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    slabs = [n for n in os.listdir("/dev/shm") if n.startswith(f"framefeed-serve-{server.pid}-")]
    assert slabs and all(stat.S_IMODE(os.stat(f"/dev/shm/{n}").st_mode) == 0o600 for n in slabs)


def test_four_client_processes_get_what_direct_decoding_gives(server):
    paths = [_path(name) for name in FILES]
    shares = [[paths[(2 * seed + k) % len(paths)] for k in range(4)] for seed in range(4)]  # each file twice
    workers = [subprocess.Popen([sys.executable, str(WORKER), "compare", server.address, str(seed), *share],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
               for seed, share in enumerate(shares)]
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-3000:]
        report = json.loads(out.strip().splitlines()[-1])
        assert report["transport"] == "shm"
        assert report["compared"] == 4 * 7 and report["mismatches"] == []


def test_batches_view_shared_memory_and_release_their_slot(server, client):
    path = _path(LONG)
    assert wait_until(lambda: client.stats()["leases"] == 0, 15)  # earlier tests' clients are gone
    before = 0
    batch = client.submit(path, indices=[3, 1, 3]).result()
    expected = VideoDecoder(path).get_frames_at([3, 1, 3])
    assert torch.equal(batch.data, expected.data) and batch.data.stride() == expected.data.stride()
    assert batch.info.source == path and batch.info.frames_decoded >= 3
    view = batch.data[1]  # a view keeps the slot leased after the batch is gone
    del batch
    assert client.stats()["leases"] == before + 1
    del view
    assert wait_until(lambda: client.stats()["leases"] == before, 10)
    batch = client.submit(path, indices=[0]).result()
    batch.release()
    assert wait_until(lambda: client.stats()["leases"] == before, 10)


def test_map_and_inline_transport(server, client):
    paths = [_path(name) for name in FILES[:3]]
    results = list(client.map([corpus.BY_NAME[n].path for n in FILES[:3]], lookahead=2))
    for path, batch in zip(paths, results, strict=True):
        assert torch.equal(batch.data, VideoDecoder(path).get_all_frames().data)
    with connect(server.address, transport="inline") as inline:
        assert inline.transport == "inline"
        got = inline.submit(paths[0], indices=[5, 2], dimension_order="NHWC").result()
        want = VideoDecoder(paths[0], dimension_order="NHWC").get_frames_at([5, 2])
        assert torch.equal(got.data, want.data) and torch.equal(got.pts_seconds, want.pts_seconds)


def test_decoder_transforms_apply_on_the_server(server, client):
    from framefeed.transforms import CenterCrop, RandomCrop, Resize

    path = _path(LONG)
    transforms = [Resize((120, 160)), CenterCrop((100, 90))]
    got = client.submit(path, indices=[4, 0], transforms=transforms, dimension_order="NHWC").result()
    want = VideoDecoder(path, transforms=transforms, dimension_order="NHWC").get_frames_at([4, 0])
    assert got.data.shape == (2, 100, 90, 3) and torch.equal(got.data, want.data)
    with pytest.raises(ValueError, match="not supported through framefeed serve"):
        client.submit(path, indices=[0], transforms=[RandomCrop((10, 10))])


def test_output_dtype_crosses_the_service(server, client):
    """float32 frames lie in slots of 4 bytes per sample; "auto" is decided by the server
    (float32 for the 10-bit file); the inline transport carries them too."""
    ten_bit, eight_bit = _path("hevc_10bit.mkv"), _path(LONG)
    for path, dtype, expected in [(ten_bit, torch.float32, torch.float32), (ten_bit, "auto", torch.float32),
                                  (eight_bit, "auto", torch.uint8), (eight_bit, torch.float32, torch.float32)]:
        got = client.submit(path, indices=[2, 0, 2], output_dtype=dtype).result()
        want = VideoDecoder(path, output_dtype=dtype).get_frames_at([2, 0, 2])
        assert got.data.dtype == expected and torch.equal(got.data, want.data), (path, dtype)
    clips = list(client.map([ten_bit], output_dtype=torch.float32))
    assert torch.equal(clips[0].data, VideoDecoder(ten_bit, output_dtype=torch.float32).get_all_frames().data)
    with connect(server.address, transport="inline") as inline:
        got = inline.submit(ten_bit, indices=[1], dimension_order="NHWC", output_dtype="auto").result()
        want = VideoDecoder(ten_bit, dimension_order="NHWC", output_dtype="auto").get_frames_at([1])
        assert got.data.dtype == torch.float32 and torch.equal(got.data, want.data)
    with pytest.raises(ValueError, match=r"Invalid output_dtype \(torch.float16\)"):
        client.submit(ten_bit, indices=[0], output_dtype=torch.float16)


def test_request_errors_are_replies_and_the_connection_stays_usable(server, client, tmp_path):
    good = _path(LONG)
    outside = server.tmp / "outside.mp4"  # a real video next to the allowed root, not under it
    outside.write_bytes(Path(good).read_bytes())
    link = server.root / "link.mp4"
    if not link.exists():
        link.symlink_to(outside)
    corrupt = server.root / "corrupt.mp4"  # the first third of a video, then garbage (its index is gone)
    data = Path(good).read_bytes()
    corrupt.write_bytes(data[:len(data) // 3] + random.Random(0).randbytes(len(data) - len(data) // 3))

    def still_serving():
        assert client.submit(good, indices=[1]).result().data.shape == (1, 3, 240, 320)

    cases = [
        (str(outside), PermissionError, "outside the server's --allow-root"),
        (f"{server.root}/../outside.mp4", PermissionError, "outside"),
        (str(link), PermissionError, "outside"),
        (str(server.root / "missing.mp4"), FileNotFoundError, "missing.mp4"),
    ]
    for source, error, text in cases:
        with pytest.raises(error, match=text):
            client.submit(source, indices=[0]).result()
        still_serving()
    with pytest.raises(IndexError, match="Invalid frame index=500"):
        client.submit(good, indices=[500]).result()
    with pytest.raises((ValueError, RuntimeError)) as failure:  # a corrupt file fails its own request only
        client.submit(str(corrupt)).result()
    assert "/proc/self/fd" not in str(failure.value)  # messages name the client's path
    still_serving()
    with pytest.raises(TypeError, match="pass a path"):
        client.submit(b"\x00\x00\x00\x18ftypmp42")
    # Messages no client would send: answered with INVALID_ARGUMENT / RESOURCE_EXHAUSTED.
    decode = client._calls["Decode"]
    from framefeed.serve.protocol import pack

    session = client._session
    bad_bodies = [
        b"\xc1 not msgpack",
        pack([1, 2, 3]),  # type: ignore[arg-type]
        pack({"session": session, "source": good, "transport": "shm", "indices": "0-5"}),
        pack({"session": session, "source": good, "transport": "shm", "__class__": "os.system"}),
        pack({"session": session, "source": good, "transport": "carrier-pigeon"}),
        pack({"session": session, "transport": "shm"}),
    ]
    for body in bad_bodies:
        with pytest.raises(grpc.RpcError) as refused:
            decode(body, timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed" in refused.value.details()
        still_serving()
    with pytest.raises(grpc.RpcError) as too_large:
        decode(pack({"session": session, "source": good, "transport": "shm", "indices": [70_000] * 400_000}), timeout=30)
    assert too_large.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    still_serving()
    with pytest.raises(ProtocolError, match="refused Decode"):
        client.submit(good, indices=[70_000] * 400_000).result()
    still_serving()
    requests = client.stats()["requests"]["Decode"]
    assert requests["malformed"] >= len(bad_bodies) and requests["error"] >= len(cases) + 2


def test_stats_and_prometheus_metrics(server, client):
    client.submit(_path(LONG), indices=[0, 1]).result()
    stats = client.stats()
    pool = stats["devices"]["cpu"]["pool"]
    assert pool["frames_returned"] >= 2 and pool["frames_decoded"] >= pool["frames_returned"] - 1
    assert stats["frames_returned"] >= 2 and stats["clients"] >= 1 and stats["memory_budget_bytes"] == 256 << 20
    assert {"in_flight", "waiting_for_memory", "leased_bytes", "frames_per_second"} <= set(stats)
    assert server.metrics_url and server.metrics_url.startswith("http://127.0.0.1:")
    text = urllib.request.urlopen(server.metrics_url, timeout=30).read().decode()
    for name in ("framefeed_serve_requests_total", "framefeed_serve_frames_decoded_total",
                 "framefeed_serve_frames_returned_total", "framefeed_serve_frames_per_second",
                 "framefeed_serve_queue_depth", "framefeed_serve_leased_bytes"):
        assert name in text, name
    assert 'framefeed_serve_requests_total{method="Decode",outcome="ok"}' in text


def test_killed_client_loses_only_its_work_and_its_slots_return(server, client):
    path = _path(LONG)
    victim = subprocess.Popen([sys.executable, str(WORKER), "hold", server.address, path],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        holding = victim.stdout.readline()
        assert holding.startswith("holding "), victim.stderr.read()[-2000:] if victim.poll() is not None else holding
        assert victim.stdout.readline().strip() == "requested"
        assert client.stats()["leases"] >= 4
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(30)
    finally:
        if victim.poll() is None:
            victim.kill()
    # Meanwhile everyone else is served.
    assert torch.equal(client.submit(path, indices=[7]).result().data, VideoDecoder(path)[7].unsqueeze(0))
    # Its authentication connection closed with the process: the session ends, its slots return.
    assert wait_until(lambda: client.stats()["leases"] == 0 and client.stats()["in_flight"] == 0, 20)
    stats = client.stats()
    assert stats["leased_bytes"] == 0
    assert any(f"client pid {victim.pid} " in line and "disconnected without saying goodbye" in line
               and "slot(s) returned" in line for line in server.stderr_lines), server.stderr_lines[-5:]


# -- servers of their own ------------------------------------------------------------------------


def test_full_memory_budget_waits_then_fails_busy(tmp_path, corpus_files):
    path = _path(LONG)
    frame = 240 * 320 * 3
    budget = str(frame * 8 + 4096 * 8)
    with _start(tmp_path, "--memory-budget", budget, "--client-memory", budget) as server, \
            connect(server.address) as client:
        held = [client.submit(path, indices=[i, i + 1, i + 2, i + 3]).result() for i in (0, 4)]
        began = time.monotonic()
        with pytest.raises(ServiceBusyError, match="busy: no room"):
            client.submit(path, indices=[10], timeout=1.5).result()
        assert 1.0 < time.monotonic() - began < 15
        waiting = client.submit(path, indices=[10, 11], timeout=30)  # back-pressure: waits for room
        time.sleep(1.0)
        assert not waiting.done()
        held[0].release()
        assert torch.equal(waiting.result(timeout=30).data, VideoDecoder(path).get_frames_at([10, 11]).data)
        with pytest.raises(Exception, match="more than the server's whole memory budget"):
            client.submit(path).result()  # 200 frames can never fit: refused before decoding
        assert client.stats()["busy_timeouts"] == 1


def test_sigterm_finishes_in_flight_requests_or_fails_them_clearly(tmp_path, corpus_files):
    """Room for 8 frames, 4 held: of two 4-frame requests in flight at SIGTERM,
    one gets the room and finishes; the other waits for room no release can
    bring (new calls are refused while stopping) and fails when the 3 s
    shutdown timeout ends. The server then exits 0."""
    path = _path(LONG)
    frame = 240 * 320 * 3
    budget = str(frame * 8 + 4096 * 8)  # one client may hold it all here
    server = _start(tmp_path, "--memory-budget", budget, "--client-memory", budget, "--shutdown-timeout", "3")
    try:
        client = connect(server.address)
        held = client.submit(path, indices=[0, 1, 2, 3]).result()
        futures = [client.submit(path, indices=[i, i + 1, i + 2, i + 3]) for i in (20, 40)]
        assert wait_until(lambda: client.stats()["waiting_for_memory"] == 1 or all(f.done() for f in futures), 30)
        began = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(60) == 0
        assert time.monotonic() - began < 3 + 20
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result(timeout=30).data.shape[0])
            except ServiceConnectionError as error:
                outcomes.append(str(error))
        assert 4 in outcomes
        assert sum(isinstance(o, str) and ("stopped" in o or "not reachable" in o) for o in outcomes) == 1, outcomes
        assert any("stopping:" in line for line in server.stderr_lines)
        del held
    finally:
        server.kill()


def test_killed_server_makes_clients_raise_within_their_timeout(tmp_path, corpus_files):
    frame = 240 * 320 * 3
    budget = str(frame * 4 + 4096 * 4)
    token = tmp_path / "serve.token"
    server = _start(tmp_path, "--port", "0", "--token-file", str(token), "--memory-budget", budget,
                    "--client-memory", budget)
    try:
        host, port = server.address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0  # TCP binds loopback unless told otherwise
        assert server.token_file == str(token) and stat.S_IMODE(token.stat().st_mode) == 0o600
        client = connect(server.address, timeout=20, token_file=token)
        assert client.transport == "shm"
        held = client.submit(_path(LONG), indices=[0, 1, 2, 3]).result()  # the budget is full now
        future = client.submit(_path(LONG), indices=[4])  # waits for room: in flight when the server dies
        time.sleep(0.5)
        assert not future.done()
        os.kill(server.pid, signal.SIGKILL)
        server.process.wait(30)
        began = time.monotonic()
        with pytest.raises(ConnectionError):
            future.result(timeout=60)
        with pytest.raises(ConnectionError):
            client.submit(_path(LONG), indices=[0]).result(timeout=60)
        assert time.monotonic() - began < 25
        del held
        client.close()
    finally:
        server.kill()
    began = time.monotonic()
    with pytest.raises(ServiceConnectionError, match="no framefeed server"):
        connect(server.address, connect_timeout=3)
    assert time.monotonic() - began < 10
    from framefeed.serve._shm import remove_stale_segments

    assert any(name.startswith(f"framefeed-serve-{server.pid}-") for name in remove_stale_segments())
