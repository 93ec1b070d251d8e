"""An app whose top level opens a connection (through a helper module) and keeps it."""
import os

import db

CONN = db.connect(os.environ["UPSTREAM"])


async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
