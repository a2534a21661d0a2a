"""A tiny raw-ASGI backend for the gateway's tests and bench: who am I, echo, failures, SSE, CPU work.

Run: python tests/integration/gateway/apps/backend.py --port 9001 --replica r1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

REPLICA = os.environ.get("REPLICA_ID", "r0")
STATE = {"fail_status": int(os.environ.get("FAIL_STATUS", "0")),
         "delay_s": float(os.environ.get("DELAY_MS", "0")) / 1000}  # DELAY_MS: a slow replica for whoami


async def _body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _send(send, status: int, body: bytes, content_type: bytes = b"application/json", headers=()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"x-replica", REPLICA.encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
    if path == "/_fail":
        STATE["fail_status"] = int(query.get("status", "0"))
        await _send(send, 200, b"{}")
        return
    if path == "/.well-known/lichen":
        await _send(send, 200, json.dumps({"name": "backend", "endpoints": [
            {"path": "/echo", "method": "POST", "idempotent": True},
            {"path": "/once", "method": "POST", "idempotent": False}]}).encode())
        return
    if STATE["fail_status"] and path not in ("/readyz", "/healthz"):
        await _body(receive)
        await _send(send, STATE["fail_status"], b'{"error":"internal detail: stack trace here"}')
        return
    if path in ("/", "/hello", "/readyz", "/healthz") or path.endswith("/whoami"):
        if STATE["delay_s"] and path.endswith("/whoami"):
            await asyncio.sleep(STATE["delay_s"])
        await _send(send, 200, b'{"replica":"%s","path":"%s"}' % (REPLICA.encode(), path.encode()),
                    headers=[(b"x-seen-request-id", dict(scope["headers"]).get(b"x-request-id", b""))])
        return
    if path.endswith("/cpu"):
        end = time.thread_time() + float(query.get("ms", "2")) / 1000
        while time.thread_time() < end:
            pass
        await _send(send, 200, b'{"ok":true}')
        return
    if path.endswith("/slow"):
        await asyncio.sleep(float(query.get("ms", "100")) / 1000)
        await _send(send, 200, b'{"replica":"%s"}' % REPLICA.encode())
        return
    if path.endswith("/echo") or path.endswith("/once"):
        body = await _body(receive)
        await _send(send, 200, body, b"application/octet-stream")
        return
    if path.endswith("/sse"):
        count = int(query.get("n", "3"))
        gap = float(query.get("gap_ms", "300")) / 1000
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for i in range(count):
            await send({"type": "http.response.body", "body": b"data: event %d %f\n\n" % (i, time.time()), "more_body": True})
            await asyncio.sleep(gap)
        await send({"type": "http.response.body", "body": b""})
        return
    await _send(send, 404, b'{"error":"not found"}')


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--replica", default=None)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.replica:
        os.environ["REPLICA_ID"] = args.replica
        global REPLICA
        REPLICA = args.replica
    uvicorn.run("backend:app" if args.workers > 1 else app, host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False, workers=args.workers, http="httptools", loop="uvloop",
                app_dir=os.path.dirname(os.path.abspath(__file__)) if args.workers > 1 else ".")


if __name__ == "__main__":
    main()
