"""`framefeed serve` on a real GPU: frames through CUDA IPC (skipped without CUDA).

The server is a subprocess on cuda:0; this test process is the client, so
every batch crosses a process boundary through the server's IPC-exported
slab. Ground truth: `VideoDecoder(path, device="cuda")` in this process.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import corpus
from framefeed import VideoDecoder

pytestmark = pytest.mark.cuda
pytest.importorskip("grpc", reason="framefeed[serve] not installed")

REPO = Path(__file__).resolve().parent.parent
FILES = ["h264_bframes_long_gop.mp4", "hevc_cra.mp4", "vp9.webm"]


@pytest.fixture(scope="module")
def gpu_server(tmp_path_factory, corpus_files):
    from framefeed.serve.launch import ServerProcess

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    socket = tmp_path_factory.mktemp("serve-cuda") / "serve.sock"
    with ServerProcess(["--device", "cuda:0", "--allow-root", str(corpus.cache_dir()), "--socket", str(socket),
                        "--memory-budget", "1GiB", "--lease-timeout", "3"], env=env) as server:
        yield server


def test_frames_arrive_as_cuda_tensors_equal_to_direct_decoding(gpu_server):
    from framefeed.client import connect

    with connect(gpu_server.address, transport="cuda") as client:
        assert client.transport == "cuda"
        for name in FILES:
            path = str(corpus.BY_NAME[name].path)
            want = VideoDecoder(path, device="cuda").get_frames_at([0, 7, 3, 7])
            got = client.submit(path, indices=[0, 7, 3, 7]).result()
            assert got.data.is_cuda and got.data.device == want.data.device
            assert torch.equal(got.data, want.data) and torch.equal(got.pts_seconds, want.pts_seconds)
            # Work queued on the consumer's stream after arrival sees the frames.
            assert int(got.data.float().sum().item()) == int(want.data.float().sum().item())


def test_slots_return_and_device_memory_stays_flat(gpu_server):
    from framefeed.client import connect
    from framefeed.serve.launch import wait_until

    path = str(corpus.BY_NAME[FILES[0]].path)
    with connect(gpu_server.address, transport="cuda") as client:
        used = []
        for i in range(300):
            batch = client.submit(path, indices=[i % 150, (i * 7) % 150]).result()
            batch.data[0, 0, 0, 0].item()
            del batch
            if i % 50 == 49:
                free, total = torch.cuda.mem_get_info()
                used.append(total - free)
        assert max(used[1:]) - min(used[1:]) <= 64 << 20, used
        assert wait_until(lambda: client.stats()["leases"] == 0, 10)
        batch = client.submit(path, indices=[1]).result()
        batch.release()
        assert wait_until(lambda: client.stats()["leased_bytes"] == 0, 10)
