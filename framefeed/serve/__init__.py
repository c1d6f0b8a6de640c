"""`framefeed serve`: one process owns the decoders and the device memory,
many client processes ask it for frames (`framefeed.client.connect`).

```
framefeed serve --allow-root /data [--device cuda:0 ...] [--socket PATH | --host 127.0.0.1 --port N]
                [--memory-budget 2GiB] [--client-memory 1GiB] [--metrics-port 9400]
                [--allow-uid UID] [--allow-gid GID] [--token-file PATH] [--refuse-hard-links]
```

Layout:
- `protocol`: the wire (gRPC unary calls with msgpack bodies), errors, addresses
- `_server`: the gRPC server, the authentication socket, signals (why gRPC: there)
- `_auth`: who a client is (peer credentials, the TCP token's proofs);
  `_folders`: whose folder the socket lives in
- `_service`: requests -> plan, reserve room, a `DecodePool` per device -> slots in a slab
- `_leases`: client sessions, per-client shares, the fair queue for room
- `_slab`: the slot allocator; `_shm` and `_cuda_ipc`: the memory behind it
- `_paths`: which files a request may read; `_metrics`: Prometheus `/metrics`
- `_warnings`: decoder warnings back to the request they belong to;
  `_memory`: giving the heap back after a burst
- `launch`: `ServerProcess`, a server as a child process (scripts, benchmarks, tests)

The server needs grpcio and msgpack (`pip install 'framefeed[serve]'`); they
are imported only when a server or client starts.
"""

from __future__ import annotations

import re

SERVE_EXTRA_HINT = "pip install 'framefeed[serve]'"


def require_serve_dependencies() -> None:
    """Raises ImportError with one line naming the extra when grpcio or msgpack is missing."""
    missing = []
    for module, package in (("grpc", "grpcio"), ("msgpack", "msgpack")):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise ImportError(f"framefeed serve and framefeed.client need {' and '.join(missing)}: {SERVE_EXTRA_HINT}")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from "1073741824", "512MiB", "2GiB", "1.5G" (binary units; "MB" is taken as MiB too).

    Raises:
        ValueError: not a size, or not positive.
    """
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"invalid size {text!r}: use bytes or a number with K, M, G or T (e.g. 2GiB)")
    number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * (1 << (10 * " kmgt".index(unit or " "))))
    if size <= 0:
        raise ValueError(f"invalid size {text!r}: must be positive")
    return size
