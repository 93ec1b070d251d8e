"""Uses a pure-Python package installed from a local wheel (built by the tests)."""
import tinylib


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": tinylib.greet().encode()})
