"""`framefeed serve` attacked as a hostile local user would (issue #23).

Each case runs as another uid (`serve_attacker.py`, started as root, drops
to that uid before it acts) or in another PID namespace (`unshare`), against
real server subprocesses. What the server must do: refuse a socket folder
someone else made; admit on its Unix socket only the uids/gids it allows and
on TCP only token holders; reserve memory before decoding (nothing decoded
for a request that cannot fit or must wait, a fair share per client, memory
returned after a burst: asserted from the server's resident size); bound
/metrics; keep the slabs of live servers in other PID namespaces; name the
client's path (never a link's target, never /proc/self/fd); raise through the
client what an in-process `DecodePool` raises, warnings included.

Needs Linux and root (CI runs as root); cases skip with the reason otherwise.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path

import pytest
import torch

import corpus
from framefeed import VideoDecoder
from framefeed.pool import DecodePool
from framefeed.transforms import Resize

pytest.importorskip("grpc", reason="framefeed[serve] not installed")
pytest.importorskip("msgpack", reason="framefeed[serve] not installed")

from framefeed.client import connect  # noqa: E402
from framefeed.serve.launch import ServerProcess, wait_until  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ATTACKER = Path(__file__).resolve().parent / "serve_attacker.py"
WORKER = Path(__file__).resolve().parent / "serve_worker.py"
LONG = "h264_bframes_long_gop.mp4"  # 200 frames of 320x240
FRAME = 320 * 240 * 3
NOBODY = 65534
GUEST_GID = 4242  # a group the shared server admits; nobody is not in it
MIB = 1 << 20

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux: peer credentials, /proc")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    return env


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("running a case as another uid needs root (CI runs the suite as root)")


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _attacks(*cases: tuple, timeout: float = 180) -> list[dict]:
    """Run serve_attacker.py cases, each `(uid, gid, mode, *args)`, in one process; their JSON results."""
    done = subprocess.run([sys.executable, str(ATTACKER), *(json.dumps(list(case)) for case in cases)],
                          capture_output=True, text=True, env=_env(), timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert len(results) == len(cases), done.stdout
    return results


def memory_of(pid: int) -> dict[str, int]:
    """The server's resident heap (RssAnon) and thread count, read from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name == "RssAnon":
            values["anon"] = int(rest.split()[0]) * 1024
        elif name == "Threads":
            values["threads"] = int(rest.split()[0])
    return values


def _path(name: str) -> str:
    return str(corpus.BY_NAME[name].path)


def _pool_frames_decoded(client) -> int:
    return client.stats()["devices"]["cpu"]["pool"]["frames_decoded"]


# -- one shared server for most cases ------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_tmp():
    """A sticky world-writable folder under /tmp (like /tmp itself), where other users can reach things."""
    folder = tempfile.mkdtemp(prefix="framefeed-attacks-", dir="/tmp")
    os.chmod(folder, 0o1777)
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory, corpus_files):
    """An allowed root with a secret (0600 in a 0700 folder), damaged files, links; a folder outside it."""
    base = tmp_path_factory.mktemp("attack-files")
    root, outside = base / "root", base / "outside"
    (root / "private").mkdir(parents=True)
    outside.mkdir()
    data = Path(_path(LONG)).read_bytes()
    secret = root / "private" / "secret.mp4"
    secret.write_bytes(data)
    secret.chmod(0o600)
    (root / "private").chmod(0o700)
    garbled = bytearray(data)
    for i in range(len(garbled) // 2, len(garbled) // 2 + 2000):  # damage in mid-stream: decode errors
        garbled[i] = (i * 7919) % 256
    (root / "garbled.mp4").write_bytes(bytes(garbled))
    (root / "notvideo.mp4").write_bytes(b"not a video at all " * 100)
    (root / "folder.mp4").mkdir()
    (outside / "elsewhere.mp4").write_bytes(data)
    os.link(outside / "elsewhere.mp4", root / "hardlink.mp4")
    (root / "environ.mp4").symlink_to("/proc/1/environ")
    return {"root": root, "outside": outside, "secret": str(secret)}


@pytest.fixture(scope="module")
def server(shared_tmp, files):
    """64 MiB budget (32 MiB per client), a socket other users can reach but only GUEST_GID may use."""
    socket_path = shared_tmp / "shared-server" / "serve.sock"
    args = ["--device", "cpu", "--sessions", "2", "--allow-root", str(corpus.cache_dir()),
            "--allow-root", str(files["root"]), "--socket", str(socket_path), "--allow-gid", str(GUEST_GID),
            "--memory-budget", "64MiB", "--lease-timeout", "2", "--request-timeout", "30", "--metrics-port", "0",
            "--refuse-hard-links"]
    with ServerProcess(args, env=_env()) as process:
        process.socket_path = socket_path
        yield process


@pytest.fixture
def client(server):
    with connect(server.address, timeout=60) as made:
        yield made


# -- who may connect ---------------------------------------------------------------------------------


def test_squatted_socket_folder_is_refused_by_server_and_client(shared_tmp, corpus_files):
    """Another user made the socket folder first (mode 0777): the server
    refuses to start there, and a client refuses to talk to whatever listens
    there."""
    _need_root()
    squatted = shared_tmp / "framefeed-squatted"
    made, = _attacks((NOBODY, NOBODY, "take-folder", str(squatted)))
    assert made["uid"] == NOBODY
    with pytest.raises(RuntimeError) as refused:
        ServerProcess(["--device", "cpu", "--allow-root", str(corpus.cache_dir()),
                       "--socket", str(squatted / "serve.sock")], env=_env(), start_timeout=60).stop()
    assert "refusing the socket folder" in str(refused.value) and f"uid {NOBODY}" in str(refused.value)
    assert not (squatted / "serve.sock").exists()
    with pytest.raises(PermissionError, match=f"belongs to uid {NOBODY}"):
        connect(str(squatted / "serve.sock"), connect_timeout=5)


def test_other_uid_is_refused_and_an_allowed_group_is_served_inline(server, files):
    """The socket is reachable (0666, the server admits a group), so the
    kernel's peer credentials decide: nobody is refused before any work, a
    member of the allowed group is served, inline (it may not map the
    server's shared memory)."""
    _need_root()
    secret = files["secret"]
    refused, guest, codes = _attacks((NOBODY, NOBODY, "hello", server.address, secret),
                                     (NOBODY, GUEST_GID, "hello", server.address, _path(LONG)),
                                     (NOBODY, NOBODY, "raw", f"unix:{server.socket_path}", secret))
    refused, guest = refused["decode"], guest["decode"]
    assert not refused["ok"] and refused["error"] == "PermissionError", refused
    assert f"uid {NOBODY}" in refused["message"] and "may not use this framefeed server" in refused["message"]
    assert guest["ok"] and guest["value"] == {"transport": "inline", "shape": [1, 3, 240, 320]}, guest
    assert codes == {"decode_guessed_session": "UNAUTHENTICATED", "hello": "UNAUTHENTICATED",
                     "stats_without_session": "INVALID_ARGUMENT", "open_guessed_session": "UNAUTHENTICATED"}


@pytest.fixture(scope="module")
def tcp_server(tmp_path_factory, files):
    token = tmp_path_factory.mktemp("tcp-token") / "serve.token"
    args = ["--device", "cpu", "--sessions", "1", "--allow-root", str(files["root"]), "--port", "0",
            "--token-file", str(token), "--memory-budget", "32MiB"]
    with ServerProcess(args, env=_env()) as process:
        process.token = token
        yield process


def test_tcp_admits_only_token_holders(tcp_server, files):
    _need_root()
    token = tcp_server.token
    assert tcp_server.token_file == str(token) and stat.S_IMODE(token.stat().st_mode) == 0o600
    attack, codes = _attacks((NOBODY, NOBODY, "tcp", tcp_server.address, files["secret"], str(token)),
                             (NOBODY, NOBODY, "raw", tcp_server.address, files["secret"]))
    assert not attack["no_token"]["ok"] and attack["no_token"]["error"] == "PermissionError", attack
    assert not attack["read_token"]["ok"] and attack["read_token"]["error"] == "PermissionError"
    assert not attack["named_token"]["ok"] and attack["named_token"]["error"] == "PermissionError"
    assert codes["decode_guessed_session"] == "UNAUTHENTICATED" and codes["open_guessed_session"] == "UNAUTHENTICATED"
    assert "PermissionError" in codes["hello"]  # a hello without the token's proof
    with connect(tcp_server.address, token_file=token) as owner:  # the token's holder is served
        assert owner.submit(files["secret"], indices=[3]).result().data.shape == (1, 3, 240, 320)


def test_tcp_token_must_be_private_and_proven_by_the_server(tmp_path, files, corpus_files):
    token = tmp_path / "open.token"
    token.write_text("x" * 64)
    token.chmod(0o644)
    with pytest.raises(RuntimeError, match="may be read or changed by other users"):
        ServerProcess(["--device", "cpu", "--allow-root", str(files["root"]), "--port", "0",
                       "--token-file", str(token)], env=_env(), start_timeout=60).stop()
    token.chmod(0o600)
    # A server without the token (here: told to run unauthenticated) cannot prove it holds it:
    # a client holding the token does not talk to it, a client without one may.
    with ServerProcess(["--device", "cpu", "--sessions", "1", "--allow-root", str(files["root"]), "--port", "0",
                        "--allow-unauthenticated-tcp", "--memory-budget", "16MiB"], env=_env()) as open_server:
        assert any("--allow-unauthenticated-tcp" in line for line in open_server.stderr_lines)
        with pytest.raises(PermissionError, match="did not prove"):
            connect(open_server.address, token_file=token)


# -- memory --------------------------------------------------------------------------------------


def test_output_larger_than_the_budget_is_refused_before_decoding(server, client):
    path = _path(LONG)
    decoded = _pool_frames_decoded(client)
    with pytest.raises(Exception, match="more than the server's whole memory budget"):
        client.submit(path, indices=[0, 1, 2], transforms=[Resize((8192, 8192))]).result()  # 604 MB
    with connect(server.address, transport="inline") as inline, \
            pytest.raises(Exception, match="more than the server's whole memory budget"):
        inline.submit(path, indices=[5], transforms=[Resize((8192, 8192))]).result()  # 3x the budget, inline
    with pytest.raises(Exception, match="more than one client may hold"):
        client.submit(path, indices=list(range(150))).result()  # 34.6 MB > 32 MiB
    assert _pool_frames_decoded(client) == decoded  # refused before a single frame was decoded


def test_requests_waiting_for_memory_hold_no_frames_and_memory_returns(server):
    """Two clients fill the budget; 24 requests of 40 frames (9.2 MB each)
    then wait: nothing of theirs is decoded while they wait, the server's
    heap stays put, and once room returns they are all served. After the
    burst the server gives its heap back."""
    path = _path(LONG)
    with connect(server.address) as warm:
        warm.submit(path, indices=[0]).result()
    baseline = memory_of(server.pid)["anon"]
    holders = [connect(server.address) for _ in range(2)]
    waiter = connect(server.address, timeout=60)
    try:
        held = [h.submit(path, indices=list(range(i, i + 32))).result() for h in holders for i in (0, 32, 64, 96)]
        decoded = _pool_frames_decoded(waiter)
        futures = [waiter.submit(path, indices=list(range(k, k + 40))) for k in range(24)]
        assert wait_until(lambda: waiter.stats()["waiting_for_memory"] >= 24, 30), waiter.stats()
        time.sleep(0.5)
        assert _pool_frames_decoded(waiter) == decoded  # waiting requests hold no decoded frames
        waiting_heap = memory_of(server.pid)["anon"]
        assert waiting_heap - baseline < 48 * MIB, (baseline, waiting_heap)
        del held
        while futures:  # each batch dropped as it comes (its future too): the client's share frees
            done, _ = wait(futures, timeout=60, return_when=FIRST_COMPLETED)
            assert done, f"{len(futures)} requests not served within 60 s: {waiter.stats()}"
            served = next(iter(done))
            futures.remove(served)
            del done
            assert served.result().pts_seconds.numel() == 40
            del served
        assert wait_until(lambda: waiter.stats()["leases"] == 0, 20)
        # After the burst, idle: the heap goes back to where it was.
        assert wait_until(lambda: memory_of(server.pid)["anon"] - baseline < 40 * MIB, 20), \
            (baseline, memory_of(server.pid))
        assert waiter.stats()["heap_trims"] >= 1
    finally:
        for made in (*holders, waiter):
            made.close()


def test_a_greedy_client_in_another_pid_namespace_keeps_to_its_share(server, client):
    """A client (in its own PID namespace) grabs 32-frame batches and keeps
    heart-beating: it gets its share (half the budget) and no more, and a
    well-behaved client is served meanwhile."""
    if not _unshare_works():
        pytest.skip("unshare --pid --fork --mount-proc is not allowed here")
    path = _path(LONG)
    greedy = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", sys.executable, str(WORKER), "greedy",
                               server.address, path, "32"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env())
    try:
        grabbed = json.loads(greedy.stdout.readline() or "{}")
        assert grabbed, greedy.stderr.read()[-2000:] if greedy.poll() is not None else "no report"
        share = client.stats()["client_memory_bytes"]
        assert share == 32 * MIB and 0 < grabbed["held_bytes"] <= share, grabbed
        assert "already holds" in grabbed["refused"], grabbed
        began = time.monotonic()
        batch = client.submit(path, indices=list(range(100, 132)), timeout=10).result()
        assert batch.pts_seconds.numel() == 32 and time.monotonic() - began < 10
        stats = client.stats()
        assert stats["largest_client_bytes"] <= share
    finally:
        greedy.stdin.close()
        greedy.wait(30)


# -- /metrics ------------------------------------------------------------------------------------


def test_metrics_takes_no_thread_per_connection_and_serves_only_metrics(server):
    _need_root()
    url = server.metrics_url
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    threads = memory_of(server.pid)["threads"]
    case = json.dumps([NOBODY, NOBODY, "metrics-flood", host, port, "400"])
    flood = subprocess.Popen([sys.executable, str(ATTACKER), case], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=_env())
    try:
        opened = json.loads(flood.stdout.readline() or "{}")
        assert opened.get("opened") == 400, flood.stderr.read()[-2000:] if flood.poll() is not None else opened
        assert opened["closed_at_once"] >= 400 - 32  # the oldest go when more than 32 are open
        assert memory_of(server.pid)["threads"] <= threads + 2
        assert b"framefeed_serve_requests_total" in urllib.request.urlopen(url, timeout=30).read()
        for other in ("/", "/metrics/../secret", "/other"):
            with pytest.raises(urllib.error.HTTPError) as missing:
                urllib.request.urlopen(url.replace("/metrics", other), timeout=30)
            assert missing.value.code == 404
        flood.stdin.write("go\n")
        flood.stdin.flush()
        closed = json.loads(flood.stdout.readline())
        assert closed["still_open"] == 0 and closed["all_closed_after"] <= 10, closed  # idle ones time out
    finally:
        flood.kill()
        flood.wait(30)


# -- slabs across PID namespaces ------------------------------------------------------------------


def test_a_server_in_another_pid_namespace_keeps_live_slabs(server, tmp_path):
    if not _unshare_works():
        pytest.skip("unshare --pid --fork --mount-proc is not allowed here")
    slabs = sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"framefeed-serve-{server.pid}-"))
    assert slabs
    with ServerProcess(["--device", "cpu", "--sessions", "1", "--allow-root", str(corpus.cache_dir()),
                        "--socket", str(tmp_path / "ns" / "serve.sock"), "--memory-budget", "16MiB"],
                       env=_env(), wrapper=["unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGTERM"]) as other:
        assert other.address
        assert sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"framefeed-serve-{server.pid}-")) == slabs
        with connect(server.address) as fresh:
            assert fresh.transport == "shm"
            assert fresh.submit(_path(LONG), indices=[9]).result().data.shape == (1, 3, 240, 320)
        # unshare waits for its child with SIGTERM blocked: stop the server itself (its host pid)
        children = Path(f"/proc/{other.pid}/task/{other.pid}/children").read_text().split()
        for pid in children:
            os.kill(int(pid), signal.SIGTERM)


# -- what clients see -------------------------------------------------------------------------------


def test_errors_are_those_of_an_in_process_pool(server, client, files):
    root, path = files["root"], _path(LONG)
    cases = [
        (str(root / "missing.mp4"), {"indices": [0]}),
        (str(root / "folder.mp4"), {"indices": [0]}),
        (str(root / "notvideo.mp4"), {}),
        (path, {"indices": [500]}),
        (path, {"seconds": [99.0]}),
        (path, {"indices": [0], "stream_index": 5}),
        (str(root / "garbled.mp4"), {"start": 60, "stop": 120}),
        (str(root / "garbled.mp4"), {"start": 97, "stop": 100}),
    ]
    with DecodePool("cpu", 1) as pool:
        for source, kwargs in cases:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with pytest.raises(Exception) as local:
                    pool.submit(source, **kwargs).result()
                with pytest.raises(Exception) as remote:
                    client.submit(source, **kwargs).result()
            want, got = local.value, remote.value
            assert type(got) is type(want) and str(got) == str(want), (source, kwargs, got, want)
            if want.__cause__ is not None:
                assert type(got.__cause__).__name__ == "RemoteCause"
                assert str(got.__cause__) == f"{type(want.__cause__).__module__}." \
                    f"{type(want.__cause__).__qualname__}: {want.__cause__}"
    assert not any("/proc/self/fd" in line for line in server.stderr_lines)


def test_decoder_warnings_reach_the_client_and_never_the_server_log(server, client, files):
    vfr = _path("vfr.mkv")
    with pytest.warns(UserWarning) as local:
        VideoDecoder(vfr, seek_mode="approximate").get_frames_at([0, 5])
    with pytest.warns(UserWarning) as remote:
        client.submit(vfr, indices=[0, 5], seek_mode="approximate").result()
    assert [str(w.message) for w in remote] == [str(w.message) for w in local]
    garbled = str(files["root"] / "garbled.mp4")
    with pytest.warns(UserWarning, match=r"packet\(s\) of '.*garbled.mp4' could not be decoded") as caught, \
            pytest.raises(Exception, match="was not produced by the decoder"):
        client.submit(garbled, start=60, stop=120).result()
    assert all(garbled in str(w.message) for w in caught)
    assert not any("could not be decoded" in line or "/proc/self/fd" in line for line in server.stderr_lines)


def test_links_name_the_clients_path_and_hard_links_can_be_refused(client, files):
    with pytest.raises(PermissionError) as escaped:
        client.submit(str(files["root"] / "environ.mp4"), indices=[0]).result()
    assert "environ.mp4" in str(escaped.value) and "/proc/" not in str(escaped.value)
    with pytest.raises(PermissionError, match="hard link"):
        client.submit(str(files["root"] / "hardlink.mp4"), indices=[0]).result()


def test_clients_map_the_slab_privately(client):
    """A client may write into its batch; the server's slab (and so other
    clients' frames) stays as the server wrote it."""
    path = _path(LONG)
    want = VideoDecoder(path).get_frames_at([3, 4]).data
    batch = client.submit(path, indices=[3, 4]).result()
    assert client.transport == "shm" and torch.equal(batch.data, want)
    (name, view), = client._host_views.items()
    mappings = [line.split() for line in Path("/proc/self/maps").read_text().splitlines() if name in line]
    assert mappings and all(m[1][3] == "p" for m in mappings), mappings  # private, not shared
    offset = batch.data.data_ptr() - ctypes.addressof(ctypes.c_char.from_buffer(view._map))
    slab = os.open(f"/dev/shm/{name}", os.O_RDONLY)
    try:
        written = os.pread(slab, want.numel(), offset)  # the slot as the server wrote it
        batch.data.zero_()
        assert not batch.data.any()
        assert os.pread(slab, want.numel(), offset) == written and any(written)
    finally:
        os.close(slab)
    batch.release()
    again = client.submit(path, indices=[3, 4]).result()  # the slot comes back with the server's frames
    assert torch.equal(again.data, want)


def test_a_normal_client_exit_is_not_logged_as_a_dead_client(server):
    path = _path(LONG)
    worker = subprocess.Popen([sys.executable, str(WORKER), "exit-holding", server.address, path],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0 and out.strip() == "holding", err[-2000:]
    time.sleep(3.5)  # past the lease timeout (2 s) and a heartbeat check
    about = [line for line in server.stderr_lines if f"client pid {worker.pid} " in line]
    assert about == []


def test_socket_and_folder_modes(server):
    folder = server.socket_path.parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o711 and folder.stat().st_uid == os.geteuid()
    for path in (server.socket_path, Path(str(server.socket_path) + ".auth")):
        info = path.lstat()
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o666  # shared: credentials decide
    probe = socket.socket(socket.AF_UNIX)
    probe.connect(str(server.socket_path) + ".auth")
    probe.close()
