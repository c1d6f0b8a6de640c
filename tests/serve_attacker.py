"""A hostile local user for tests/test_serve_attacks.py.

`python serve_attacker.py CASE...`, each CASE a JSON list `[uid, gid, mode,
args...]`, is started as root so that it can import what the cases need;
each case then runs in a forked child that becomes uid:gid with no
supplementary groups (the root test process cannot start Python as another
user: its interpreter may live where that user cannot read) before it
touches anything, and prints one JSON line saying what it achieved. Modes:

take-folder FOLDER
    make FOLDER first, mode 0777, as a user squatting a server's socket folder.
hello ADDRESS PATH [SERVER_UID]
    connect to a server as a client would and decode PATH.
tcp ADDRESS PATH TOKEN_FILE
    over TCP: connect with no token, try to read the server's token file,
    connect naming that file.
raw TARGET PATH
    gRPC calls no client would make: Decode with a guessed session, Hello on a
    Unix socket, Stats with no session; prints the status codes.
metrics-flood HOST PORT COUNT
    open COUNT idle connections to /metrics, print how many the server
    closed at once, then wait for a line on stdin and report how long the
    rest stayed open (at most 15 s).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time


def _drop(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    assert os.geteuid() == uid and os.getegid() == gid and os.getgroups() in ([], [gid])


def _outcome(call) -> dict:
    try:
        value = call()
    except BaseException as error:  # what the attacker got is the test's evidence
        return {"ok": False, "error": type(error).__name__, "message": str(error)[:500]}
    return {"ok": True, "value": value}


def take_folder(folder: str) -> dict:
    os.mkdir(folder)
    os.chmod(folder, 0o777)
    return {"made": folder, "uid": os.stat(folder).st_uid}


def hello(address: str, path: str, server_uid: int | None) -> dict:
    from framefeed.client import connect

    result: dict = {}

    def decode() -> dict:
        with connect(address, server_uid=server_uid, connect_timeout=10) as client:
            batch = client.submit(path, indices=[0]).result(timeout=60)
            return {"transport": client.transport, "shape": list(batch.data.shape)}

    result["decode"] = _outcome(decode)
    return result


def tcp(address: str, path: str, token_file: str) -> dict:
    from framefeed.client import connect

    def decode(**kwargs) -> dict:
        with connect(address, connect_timeout=10, **kwargs) as client:
            return {"shape": list(client.submit(path, indices=[0]).result(timeout=60).data.shape)}

    def read_token() -> str:
        with open(token_file, "rb") as file:
            return file.read().decode()

    return {"no_token": _outcome(decode), "read_token": _outcome(read_token),
            "named_token": _outcome(lambda: decode(token_file=token_file))}


def raw(target: str, path: str) -> dict:
    import grpc
    import msgpack

    channel = grpc.insecure_channel(target)
    codes = {}
    calls = {
        "decode_guessed_session": ("Decode", {"session": "0" * 32, "source": path, "transport": "inline"}),
        "hello": ("Hello", {"protocol": 2, "pid": os.getpid()}),
        "stats_without_session": ("Stats", {}),
        "open_guessed_session": ("Open", {"session": "f" * 32, "source": path}),
    }
    for name, (method, message) in calls.items():
        call = channel.unary_unary(f"/framefeed.Decode/{method}")
        try:
            reply = msgpack.unpackb(call(msgpack.packb(message, use_bin_type=True), timeout=20), raw=False)
            codes[name] = "OK" if reply.get("ok") else f"error reply: {reply.get('error')}"
        except grpc.RpcError as error:
            codes[name] = error.code().name
    channel.close()
    return codes


def metrics_flood(host: str, port: int, count: int) -> dict:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection((host, port), timeout=10)
        sockets.append(sock)
    time.sleep(1.0)
    closed = sum(_closed(s) for s in sockets)
    print(json.dumps({"opened": len(sockets), "closed_at_once": closed}), flush=True)
    sys.stdin.readline()
    began = time.monotonic()
    while time.monotonic() - began < 15 and not all(_closed(s) for s in sockets):
        time.sleep(0.2)
    return {"all_closed_after": round(time.monotonic() - began, 2), "still_open": sum(not _closed(s) for s in sockets)}


def _closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _preload(modes: set[str]) -> None:
    """Import what the cases will use, lazily imported modules included
    (nothing that starts gRPC: the cases are forked from this process)."""
    import copy  # noqa: F401
    import encodings.idna  # noqa: F401  (socket.getaddrinfo encodes host names with it)

    if modes & {"hello", "tcp", "raw"}:
        import grpc._channel  # noqa: F401
        import msgpack  # noqa: F401
    if modes & {"hello", "tcp"}:
        import framefeed.client  # noqa: F401
        import framefeed.client._videos  # noqa: F401
        import framefeed.serve._auth  # noqa: F401
        import framefeed.serve._folders  # noqa: F401
        import framefeed.serve._shm  # noqa: F401
        from framefeed.serve.protocol import _error_types

        _error_types()


def _run(uid: int, gid: int, mode: str, args: list[str]) -> dict:
    _drop(uid, gid)
    if mode == "take-folder":
        return take_folder(args[0])
    if mode == "hello":
        return hello(args[0], args[1], int(args[2]) if len(args) > 2 else None)
    if mode == "tcp":
        return tcp(args[0], args[1], args[2])
    if mode == "raw":
        return raw(args[0], args[1])
    if mode == "metrics-flood":
        return metrics_flood(args[0], int(args[1]), int(args[2]))
    raise SystemExit(f"unknown mode {mode}")


def main() -> None:
    cases = [json.loads(text) for text in sys.argv[1:]]
    _preload({case[2] for case in cases})
    for uid, gid, mode, *args in cases:
        sys.stdout.flush()
        child = os.fork()
        if child == 0:
            code = 1
            try:
                print(json.dumps(_run(uid, gid, mode, args)), flush=True)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"case {mode} as {uid}:{gid} failed")


if __name__ == "__main__":
    main()
