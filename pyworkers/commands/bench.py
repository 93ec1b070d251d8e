"""CLI commands for `pyworkers bench` (benchmarks live in the `benchmarks/` folder)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from pyworkers.cli import UserError, main


def _result_options(fn):
    """``--json``, ``-o FILE.json`` and ``-q`` of the side-by-side benchmark subcommands
    (their results go through :func:`_report`)."""
    fn = click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")(fn)
    fn = click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="FILE.json",
                      help="Also write the JSON result to FILE.")(fn)
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(fn)


SKIPPABLE = ("no_snapshot", "snapshot_restore", "prewarmed", "native_uvicorn", "pyodide_node",
             "warm", "memory")


@main.group("bench", invoke_without_command=True)
@click.option("--workload", default="reference", show_default=True, metavar="reference|hello|APP_DIR",
              help="reference: examples/fastapi-full (fastapi, pydantic, httpx; GET /items/1); "
                   "hello: examples/hello (GET /); or an app directory (GET /).")
@click.option("--runs", default=20, show_default=True, type=click.IntRange(1),
              help="Counted runs per mode (interleaved rounds).")
@click.option("--warmup", default=2, show_default=True, type=click.IntRange(0),
              help="Uncounted warm-up rounds before the counted ones.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (for scripts).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), metavar="FILE.png",
              help="Draw the cold-start distributions (needs matplotlib: pyworkers[plot]).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="FILE.json",
              help="Also write the JSON result to FILE (compare two with `bench compare`).")
@click.option("--store", "store_dir", type=click.Path(file_okay=False),
              help="Deploy into this store (default: a temporary one, removed afterwards).")
@click.option("--path", "req_path", metavar="PATH",
              help="Request path (default: /items/1 for reference, / otherwise).")
@click.option("--requests", default=2000, show_default=True, type=click.IntRange(10),
              help="Warm HTTP requests per server (sequential, then again concurrent).")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1),
              help="Connections for the warm requests/s measurement.")
@click.option("--skip", multiple=True, type=click.Choice(SKIPPABLE),
              help="Leave a mode or measurement out (repeatable).")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@click.pass_context
def bench(ctx: click.Context, workload: str, runs: int, warmup: int, as_json: bool,
          plot_path: str | None, output: str | None, store_dir: str | None, req_path: str | None,
          requests: int, concurrency: int, skip: tuple[str, ...], quiet: bool) -> None:
    """Cold-start benchmark, side by side on this machine (subcommands: other benchmarks).

    \b
    Without a subcommand: deploy the workload, then N interleaved runs of
      1 pyworkers, no snapshot      (fresh isolate, import, lifespan, first response)
      2 pyworkers, snapshot restore (the cold start users see: no idle isolate)
      3 pyworkers, pre-warmed pool  (an idle restored isolate)
      4 peer: native CPython + uvicorn, new process
      5 peer: Pyodide in Node with its own snapshot (pure-Python stand-in; skipped without node)
    plus warm requests/s and p50/p99 against native uvicorn, memory per isolate, snapshot sizes
    and deploy stage timings. Prints a table (ratios to mode 2), or JSON with --json.
    """
    if ctx.invoked_subcommand is not None:
        return
    from pyworkers.benchmarks import coldstart, report
    from pyworkers.benchmarks.common import BenchError

    if plot_path:  # fail before a long run, not after it
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UserError("--plot needs matplotlib: pip install 'pyworkers[plot]' "
                            "(or pip install matplotlib)") from None
    try:
        res = coldstart.run(workload, runs, warmup=warmup, store=store_dir, path=req_path,
                            requests=requests, concurrency=concurrency, skip=skip,
                            progress=None if quiet else coldstart._stderr)
    except BenchError as e:
        raise UserError(str(e)) from None
    _write(res, output)
    if plot_path:
        from pyworkers.benchmarks import plot

        plot.plot_result(res, plot_path)
        if not quiet:
            click.echo(f"[bench] plot written to {plot_path}", err=True)
    click.echo(json.dumps(res, indent=1) if as_json else report.format_table(res))


@bench.command("compare")
@click.argument("a", type=click.Path(exists=True, dir_okay=False), metavar="A.json")
@click.argument("b", type=click.Path(exists=True, dir_okay=False), metavar="B.json")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare_cmd(a: str, b: str, as_json: bool) -> None:
    """Two `pyworkers bench` result files side by side: per-mode medians and B / A."""
    from pyworkers.benchmarks import report
    from pyworkers.benchmarks.common import BenchError

    try:
        c = report.compare(report.load_result(a), report.load_result(b), (a, b))
    except BenchError as e:
        raise UserError(str(e)) from None
    click.echo(json.dumps(c, indent=1) if as_json else report.format_compare(c))


@bench.command("engine")
@click.option("--release", default="314.0.7", show_default=True, help="Pyodide version.")
@click.option("--runs", default=20, show_default=True, help="Counted isolate cold starts.")
@click.option("--process-runs", default=5, show_default=True, help="Counted fresh-process starts.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def engine_cmd(release: str, runs: int, process_runs: int, as_json: bool) -> None:
    """Cold start to a usable interpreter from the cached compiled module."""
    from pyworkers.benchmarks import engine

    res = engine.run(release, runs, process_runs)
    click.echo(json.dumps(res, indent=2) if as_json else engine.format_table(res))


@bench.command("snapshot")
@click.option("--app", "app", default="examples/fastapi-full", show_default=True,
              type=click.Path(exists=True, file_okay=False), help="App directory to deploy and restore.")
@click.option("--runs", default=30, show_default=True, help="Counted restores.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def snapshot_cmd(app: str, runs: int, as_json: bool) -> None:
    """Snapshot restore time, memory per isolate and leaks, beside boot + import."""
    from pyworkers.benchmarks import snapshot

    res = snapshot.run(app, runs)
    click.echo(json.dumps(res, indent=2) if as_json else snapshot.format_table(res))


@bench.command("concurrency")
@click.option("--clients", default=32, show_default=True, type=click.IntRange(1),
              help="Concurrent closed-loop clients (one keep-alive connection each).")
@click.option("--requests", default=2000, show_default=True, type=click.IntRange(1),
              help="Counted requests per server for the I/O-bound endpoint.")
@click.option("--sync-requests", default=100, show_default=True, type=click.IntRange(1),
              help="Counted requests per server for each `def` endpoint (20 req/s inline).")
@click.option("--rounds", default=4, show_default=True, type=click.IntRange(1),
              help="Interleaved rounds the counted requests are split into.")
@click.option("--max-concurrency", type=click.IntRange(1), default=None,
              help="Pass --max-concurrency to pyworkers serve (default: serve's own).")
@click.option("--endpoint", "endpoints", multiple=True,
              type=click.Choice(["io", "def_inline", "def_threadpool"]),
              help="Measure only this endpoint (repeatable; default: all).")
@_result_options
def concurrency_cmd(clients: int, requests: int, sync_requests: int, rounds: int,
                    max_concurrency: int | None, endpoints: tuple[str, ...], as_json: bool,
                    output: str | None, quiet: bool) -> None:
    """Concurrent requests on one isolate vs native uvicorn, side by side.

    \b
    N clients against benchmarks/workloads/io (plain ASGI) served by
      pyworkers serve --max-isolates 1   and   uvicorn main:app (1 process),
    both subprocesses on 127.0.0.1, rounds interleaved. Endpoints:
      io              async def, await asyncio.sleep(0.05)
      def_inline      time.sleep(0.05) in the handler (blocks the loop)
      def_threadpool  asyncio.to_thread(time.sleep, 0.05) (Starlette's `def` endpoints)
    Prints requests/s and p50/p99 latency per server, or JSON with --json.
    """
    from pyworkers.benchmarks import concurrency
    from pyworkers.benchmarks.common import BenchError

    try:
        res = concurrency.run(clients, requests, sync_requests=sync_requests, rounds=rounds,
                              max_concurrency=max_concurrency, endpoints=endpoints or None,
                              progress=None if quiet else concurrency.stderr_progress)
    except BenchError as e:
        raise UserError(str(e)) from None
    _report(res, output, as_json, concurrency.format_table)


@bench.command("proxy")
@click.option("--clients", default=16, show_default=True, type=click.IntRange(1),
              help="Concurrent closed-loop clients (one keep-alive connection each).")
@click.option("--requests", default=1000, show_default=True, type=click.IntRange(1),
              help="Counted requests per server.")
@click.option("--rounds", default=4, show_default=True, type=click.IntRange(1),
              help="Interleaved rounds the counted requests are split into.")
@click.option("--body-bytes", default=1024, show_default=True, type=click.IntRange(0),
              help="Size of the upstream's response body.")
@click.option("--delay-ms", default=0.0, show_default=True, type=click.FloatRange(0),
              help="The upstream waits this long before answering.")
@click.option("--roundtrip-n", default=2000, show_default=True, type=click.IntRange(0),
              help="send+recv round trips (and n/10 connects) for the socket latency; 0 skips.")
@_result_options
def proxy_cmd(clients: int, requests: int, rounds: int, body_bytes: int, delay_ms: float,
              roundtrip_n: int, as_json: bool, output: str | None, quiet: bool) -> None:
    """A proxying endpoint (httpx.AsyncClient to a local upstream) vs native uvicorn.

    \b
    N clients against benchmarks/workloads/proxy (plain ASGI + httpx) served by
      pyworkers serve --max-isolates 1 --outbound-allow 127.0.0.1:*
      uvicorn main:app (1 process, the host's httpx)
    both subprocesses on 127.0.0.1, rounds interleaved; every request fetches a fixed body
    from an upstream HTTP server started by the benchmark. Then the guest's added latency
    of one connect+send+recv round trip vs native (benchmarks/net_roundtrip.py).
    Prints requests/s and p50/p99 latency per server, or JSON with --json.
    """
    from pyworkers.benchmarks import proxy
    from pyworkers.benchmarks.common import BenchError

    try:
        res = proxy.run(clients, requests, rounds=rounds, body_bytes=body_bytes,
                        delay_ms=delay_ms, roundtrip_n=roundtrip_n,
                        progress=None if quiet else proxy.stderr_progress)
    except BenchError as e:
        raise UserError(str(e)) from None
    _report(res, output, as_json, proxy.format_table)


@bench.command("workers")
@click.option("--requests", default=2000, show_default=True, type=click.IntRange(1),
              help="Counted requests per server and worker count.")
@click.option("--clients", default=16, show_default=True, type=click.IntRange(1),
              help="Concurrent closed-loop clients (one keep-alive connection each).")
@click.option("--rounds", default=2, show_default=True, type=click.IntRange(1),
              help="Interleaved rounds the counted requests are split into.")
@_result_options
def workers_cmd(requests: int, clients: int, rounds: int, as_json: bool, output: str | None,
                quiet: bool) -> None:
    """pyworkers serve --workers 1|2 vs uvicorn --workers 1|2, side by side (req/s, p99)."""
    from pyworkers.benchmarks import workers
    from pyworkers.benchmarks.common import BenchError

    try:
        res = workers.run(requests, clients, rounds,
                          progress=(lambda m: None) if quiet else workers.stderr_progress)
    except BenchError as e:
        raise UserError(str(e)) from None
    _report(res, output, as_json, workers.format_table)


def _write(res: dict, output: str | None) -> None:
    """``-o FILE.json``: the result as JSON (parent directories made)."""
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(res, indent=1) + "\n")


def _report(res: dict, output: str | None, as_json: bool, table) -> None:
    """Write ``-o``, then print the result: JSON with ``--json``, else ``table(res)``."""
    _write(res, output)
    click.echo(json.dumps(res, indent=1) if as_json else table(res))
