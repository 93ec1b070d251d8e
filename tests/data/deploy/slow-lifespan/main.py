"""Imports at once, but its lifespan startup takes minutes: the SIGKILL test kills the deploy
during the smoke stage, after the snapshot stage."""
import time


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        time.sleep(600)
        await send({"type": "lifespan.startup.complete"})
