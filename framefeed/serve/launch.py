"""Start `framefeed serve` as a child process and wait for its address.

```python
from framefeed.serve.launch import ServerProcess

with ServerProcess(["--device", "cpu", "--allow-root", "/data"]) as server:
    client = framefeed.client.connect(server.address)
```

For scripts, benchmarks and tests that own the server's lifetime; a
long-running service is better started by the init system or a container.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

_LISTENING = re.compile(r"listening on (\S+)")


class ServerProcess:
    """`python -m framefeed.cli serve *args` in a child process.

    `address` is what the server printed; `stderr_lines` collects its log.

    Raises (constructor):
        RuntimeError: the server exited or printed no address within `start_timeout`.
    """

    def __init__(self, args: Sequence[str], *, start_timeout: float = 120.0, env: dict[str, str] | None = None,
                 python: str | None = None, nice: int = 0, wrapper: Sequence[str] = ()) -> None:
        """`wrapper`: a command the server runs under (e.g. `unshare --pid --fork`)."""
        command = [*wrapper, python or sys.executable, "-m", "framefeed.cli", "serve", *args]
        preexec = (lambda: os.nice(nice)) if nice else None
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env=env, preexec_fn=preexec)
        self.stderr_lines: list[str] = []
        self._stderr = threading.Thread(target=self._drain, args=(self.process.stderr,), daemon=True)
        self._stderr.start()
        self.address = self._read_address(start_timeout)
        self.metrics_url = self._metrics_url
        threading.Thread(target=self._drain, args=(self.process.stdout,), daemon=True).start()

    def _drain(self, stream: Any) -> None:
        for line in stream:
            self.stderr_lines.append(line.rstrip("\n"))

    def _read_address(self, timeout: float) -> str:
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        line = result[0] if result else ""
        match = _LISTENING.search(line)
        if not match:
            self.kill()
            raise RuntimeError(f"framefeed serve did not start within {timeout:g} s (exit code "
                               f"{self.process.poll()}): {line!r}\n" + "\n".join(self.stderr_lines[-20:]))
        metrics = re.search(r"metrics: (\S+?)\)", line)
        self._metrics_url = metrics.group(1) if metrics else None
        token = re.search(r"token: (\S+?)[;)]", line)
        self.token_file = token.group(1) if token else None
        self.line = line.strip()
        return match.group(1)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
        """Send `sig` and wait; the exit code (None if it had to be killed after `timeout`)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
        self.kill()


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate()` until true or `timeout` seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
