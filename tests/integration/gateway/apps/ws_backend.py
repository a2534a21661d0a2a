"""A tiny raw-ASGI backend speaking WebSocket for the gateway's tests: echo, who am I, refuse, and a health check.

    /ws/echo     accepts and echoes every message (text and bytes), prefixed by nothing
    /ws/hello    accepts, sends one text message naming the replica and what it was asked, then echoes
    /ws/refuse   refuses the handshake (the server answers 403)
    /healthz     plain HTTP 200

Run: python tests/integration/gateway/apps/ws_backend.py --port 9101 --replica w1
"""

from __future__ import annotations

import argparse
import json

REPLICA = {"id": "w0"}


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        body = json.dumps({"replica": REPLICA["id"], "path": scope["path"]}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    message = await receive()  # websocket.connect
    assert message["type"] == "websocket.connect"
    path = scope["path"]
    if path.endswith("/refuse"):
        await send({"type": "websocket.close", "code": 1008})
        return
    headers = dict(scope["headers"])
    await send({"type": "websocket.accept", "subprotocol": (scope.get("subprotocols") or [None])[0]})
    if path.endswith("/hello"):
        await send({"type": "websocket.send", "text": json.dumps({
            "replica": REPLICA["id"], "path": path, "query": scope["query_string"].decode(),
            "forwarded_proto": headers.get(b"x-forwarded-proto", b"").decode(),
            "forwarded_for": headers.get(b"x-forwarded-for", b"").decode()})})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--replica", default="w0")
    args = parser.parse_args()
    REPLICA["id"] = args.replica
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, ws="websockets",
                ws_ping_interval=None, lifespan="on")


if __name__ == "__main__":
    main()
