"""Bounded look-ahead over futures: what `DecodePool.map` and the service
client's `map` share.

At most `depth` submitted requests are pending at once; a new one is
submitted as each result is handed out, so the decoders stay busy while the
caller works on the current batch, and memory stays bounded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, TypeVar

Result = TypeVar("Result")


def map_with_lookahead(submit: Callable[[Any], Future], requests: Iterator[Any], *, ordered: bool, depth: int,
                       return_exceptions: bool) -> Iterator[Result | BaseException]:
    """Yield the results of `submit(request)` for each request, keeping at most
    `depth` pending. `ordered`: in request order; else as they complete
    (ties: the earliest submitted). A failed request raises its exception, or
    with `return_exceptions` is yielded as the exception. Requests still
    pending when the iterator is closed are cancelled."""
    pending: deque[Future] = deque()
    exhausted = False

    def refill() -> None:
        nonlocal exhausted
        while not exhausted and len(pending) < depth:
            try:
                request = next(requests)
            except StopIteration:
                exhausted = True
                return
            pending.append(submit(request))

    try:
        refill()
        while pending:
            if ordered:
                future = pending.popleft()
            else:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                future = next(f for f in pending if f in done)  # earliest submitted among the done
                pending.remove(future)
            try:
                result = future.result()
            except Exception as error:
                if not return_exceptions:
                    raise
                result = error
            refill()  # keep the decoders busy while the caller works on this result
            yield result
    finally:
        for future in pending:
            future.cancel()
