"""`framefeed.client`: ask a running `framefeed serve` for frames.

```python
from framefeed.client import connect
from framefeed.samplers import clips_at_random_indices

client = connect("unix:///tmp/framefeed-1000/serve.sock")   # what `framefeed serve` printed
batch = client.submit("/data/a.mp4", indices=[0, 50, 99]).result()   # a FrameBatch
for batch in client.map(["/data/a.mp4", "/data/b.mp4"]):            # whole files, bounded look-ahead
    ...
futures = clips_at_random_indices(client.videos(paths), num_clips=4, num_frames_per_clip=8)
clips = [f.result() for f in futures]                       # one 5-D batch per path
batch.release()                                             # or just drop it
```

Same request API as `framefeed.pool.DecodePool`; see `ServiceClient` for
how frames arrive (CUDA IPC, shared memory, or inside the reply) and when
their memory returns to the server.
"""

from framefeed.client._client import ServiceBatch, ServiceClient, connect
from framefeed.serve.protocol import (
    ProtocolError,
    RemoteCause,
    ServiceBusyError,
    ServiceConnectionError,
    ServiceError,
)

__all__ = [
    "ProtocolError",
    "RemoteCause",
    "ServiceBatch",
    "ServiceBusyError",
    "ServiceClient",
    "ServiceConnectionError",
    "ServiceError",
    "connect",
]
