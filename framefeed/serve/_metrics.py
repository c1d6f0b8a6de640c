"""Prometheus `/metrics` for `framefeed serve` (prometheus-client).

A collector reads the service's snapshot at each scrape, so nothing is
updated on the request path. Metrics (all prefixed `framefeed_serve_`):

- `requests_total{method,outcome}`: outcome ok, error, busy or malformed
- `frames_decoded_total{device}`, `frames_returned_total{device}`: the
  pool's counts (decoded includes reference frames no request asked for)
- `frames_per_second`: frames returned over the last 10 s
- `queue_depth{device}`: requests in the pool not yet finished;
  `in_flight`, `waiting_for_memory`: requests inside the service
- `leased_bytes{device,transport}`, `memory_budget_bytes`, `leases`, `clients`
- `nvdec_utilisation_percent{device}`: NVML's decoder utilisation (CUDA only)
"""

from __future__ import annotations

from typing import Any


def start_metrics_server(service: Any, host: str, port: int) -> str:
    """Serve `/metrics` on `host:port` from a daemon thread; its URL.

    Raises:
        ImportError: prometheus-client is missing (one line says how to install it).
    """
    try:
        from prometheus_client import start_http_server
        from prometheus_client.core import CollectorRegistry
    except ImportError:
        raise ImportError("--metrics-port needs prometheus-client: pip install 'framefeed[serve]'") from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(service))
    started = start_http_server(port, addr=host, registry=registry)
    actual = started[0].server_port if isinstance(started, tuple) else port
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{actual}/metrics"


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
            ("leases", "Slots leased to clients", "leases"),
            ("clients", "Connected client sessions", "clients"),
        ):
            yield GaugeMetricFamily(prefix + name, help_text, value=snap[key])
