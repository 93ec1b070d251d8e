"""Cold-start workload: a small Starlette app (pure Python; async endpoints only, so nothing
needs a worker thread)."""
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


async def homepage(request: Request) -> JSONResponse:
    return JSONResponse({"message": "Hello from Starlette!"})


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"Hello, {request.path_params['name']}!")


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"method": request.method, "query": dict(request.query_params),
                         "body": (await request.body()).decode("utf-8", "replace")})


app = Starlette(routes=[
    Route("/", homepage),
    Route("/hello/{name}", hello),
    Route("/echo", echo, methods=["GET", "POST"]),
])
