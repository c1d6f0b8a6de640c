"""Prometheus `/metrics` for `framefeed serve` (prometheus-client formats it).

A collector reads the service's snapshot at each scrape, so nothing is
updated on the request path. Metrics (all prefixed `framefeed_serve_`):

- `requests_total{method,outcome}`: outcome ok, error, busy, malformed or unauthenticated
- `frames_decoded_total{device}`, `frames_returned_total{device}`: the
  pool's counts (decoded includes reference frames no request asked for)
- `frames_per_second`: frames returned over the last 10 s
- `queue_depth{device}`: requests in the pool not yet finished;
  `in_flight`, `waiting_for_memory`: requests inside the service
- `leased_bytes{device,transport}`, `inline_bytes`, `memory_budget_bytes`,
  `largest_client_bytes`, `leases`, `clients`
- `resident_bytes`, `heap_bytes`: the server's VmRSS and RssAnon
- `nvdec_utilisation_percent{device}`: NVML's decoder utilisation (CUDA only)

The HTTP side is served here, on the server's event loop, not by
prometheus-client's own server (a thread per connection without limit or
timeout): at most `MAX_CONNECTIONS` connections at once (a new one closes
the oldest), `IDLE_SECONDS` to send a request, one request per connection,
`GET`/`HEAD /metrics` only (404 for any other path, 405 for other methods).
No thread is started.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any

MAX_CONNECTIONS = 32
IDLE_SECONDS = 5.0
MAX_REQUEST_HEAD = 8192


class MetricsServer:
    """`/metrics` on `host:port` (see the module docstring); `url` once started.

    Raises (`start`):
        ImportError: prometheus-client is missing (one line says how to install it).
        OSError: the address cannot be bound.
    """

    def __init__(self, service: Any, host: str, port: int) -> None:
        try:
            from prometheus_client.core import CollectorRegistry
        except ImportError:
            raise ImportError("--metrics-port needs prometheus-client: pip install 'framefeed[serve]'") from None
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_Collector(service))
        self._host, self._port = host, port
        self._server: asyncio.AbstractServer | None = None
        self._open: collections.OrderedDict[int, asyncio.StreamWriter] = collections.OrderedDict()
        self.url = ""

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, self._host, self._port, limit=MAX_REQUEST_HEAD,
                                                  reuse_port=False)
        port = self._server.sockets[0].getsockname()[1]
        shown = f"[{self._host}]" if ":" in self._host else self._host
        self.url = f"http://{shown}:{port}/metrics"
        return self.url

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._open.values()):
                writer.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = id(writer)
        self._open[key] = writer
        while len(self._open) > MAX_CONNECTIONS:  # the oldest is most likely idle: it goes
            _, oldest = self._open.popitem(last=False)
            oldest.close()
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_SECONDS)
            await self._answer(head, writer)
        except (asyncio.TimeoutError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError, ValueError):
            pass
        finally:
            self._open.pop(key, None)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), IDLE_SECONDS)

    async def _answer(self, head: bytes, writer: asyncio.StreamWriter) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        method, target = (parts[0], parts[1]) if len(parts) == 3 else ("", "")
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            status, content_type, body = "405 Method Not Allowed", "text/plain", b"only GET /metrics\n"
        elif path != "/metrics":
            status, content_type, body = "404 Not Found", "text/plain", b"only /metrics is served here\n"
        else:
            status, content_type, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(self._registry)
        header = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                  "Connection: close\r\n\r\n").encode("latin-1")
        writer.write(header if method == "HEAD" else header + body)
        await asyncio.wait_for(writer.drain(), IDLE_SECONDS)


class _Collector:
    def __init__(self, service: Any) -> None:
        self._service = service

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self._service.snapshot()
        prefix = "framefeed_serve_"
        requests = CounterMetricFamily(prefix + "requests", "Requests answered, by method and outcome",
                                       labels=["method", "outcome"])
        for method, outcomes in snap["requests"].items():
            for outcome, count in outcomes.items():
                requests.add_metric([method, outcome], count)
        yield requests
        decoded = CounterMetricFamily(prefix + "frames_decoded", "Frames the decoders produced", labels=["device"])
        returned = CounterMetricFamily(prefix + "frames_returned", "Frames returned to clients", labels=["device"])
        queue = GaugeMetricFamily(prefix + "queue_depth", "Requests in the pool not yet finished", labels=["device"])
        leased = GaugeMetricFamily(prefix + "leased_bytes", "Slab bytes leased to clients",
                                   labels=["device", "transport"])
        nvdec = GaugeMetricFamily(prefix + "nvdec_utilisation_percent", "NVML decoder utilisation",
                                  labels=["device"])
        for name, device in snap["devices"].items():
            pool = device["pool"]
            decoded.add_metric([name], pool["frames_decoded"])
            returned.add_metric([name], pool["frames_returned"])
            queue.add_metric([name], pool["pending"])
            for transport, slab in device["slabs"].items():
                leased.add_metric([name, transport], slab["leased_bytes"])
            if pool.get("nvdec_utilisation_percent") is not None:
                nvdec.add_metric([name], pool["nvdec_utilisation_percent"])
        yield from (decoded, returned, queue, leased, nvdec)
        for name, help_text, key in (
            ("frames_per_second", "Frames returned per second over the last 10 s", "frames_per_second"),
            ("in_flight", "Requests inside the service", "in_flight"),
            ("waiting_for_memory", "Requests waiting for room in the memory budget", "waiting_for_memory"),
            ("memory_budget_bytes", "Slab size per device and transport", "memory_budget_bytes"),
            ("inline_bytes", "Bytes of frames reserved for replies being sent", "inline_bytes"),
            ("largest_client_bytes", "Bytes the client holding the most holds", "largest_client_bytes"),
            ("resident_bytes", "The server's resident memory (VmRSS)", "resident_bytes"),
            ("heap_bytes", "The server's resident anonymous memory (RssAnon: heap, decoded frames)", "heap_bytes"),
            ("leases", "Slots leased to clients", "leases"),
            ("clients", "Connected client sessions", "clients"),
        ):
            yield GaugeMetricFamily(prefix + name, help_text, value=snap[key])
