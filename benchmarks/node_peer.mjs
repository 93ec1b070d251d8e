// Peer 5 of the cold-start benchmark: Pyodide in Node with Pyodide's own memory-snapshot API.
//
// Modes (all print exactly one JSON line on stdout; Python's own output goes to stderr):
//
//   node node_peer.mjs make --package DIR --site DIR --app DIR --entry main:app --out FILE
//                           [--freeze]
//     Boot Pyodide with `_makeSnapshot: true`, mount the site-packages and app directories
//     (NODEFS, read from the host), put them on sys.path, import the app, define the ASGI
//     driver, then write `pyodide.makeMemorySnapshot()` to FILE and a sidecar FILE.json
//     (mounts, sys.path, entry). --freeze runs gc.collect(); gc.freeze() before the snapshot.
//
//   node node_peer.mjs run --snapshot FILE [--package DIR] [--path /] [--no-grow]
//     From process start to the first response: loadPyodide({_loadSnapshot}), mounts again,
//     sys.path restored, one ASGI call `GET <path>`; then exit.
//
//   node node_peer.mjs cold --package DIR --site DIR --app DIR --entry main:app [--path /]
//     Reference without a snapshot: boot + import + first response.
//
// What Pyodide's snapshot API does and does not do (read from pyodide.mjs / pyodide.asm.mjs of
// 314.0.7; the options are `_makeSnapshot`, `_loadSnapshot`, `_snapshotDeserializer`, and
// `pyodide.makeMemorySnapshot({serializer})`):
//   * the snapshot is a header + JSON (JS references held by Python) + a copy of linear memory
//     (`Module.HEAP8`) only. Wasm globals, the function table and the JS-side file system are not
//     in it. So: mounts must be made again before use (done in `fsInit`), and side modules
//     (`.so` C extensions) that were loaded before the snapshot are gone after restore while the
//     heap still points at their table slots.
//   * restore does `Module.HEAP8.set(memory)` on a freshly instantiated module whose memory has
//     the module's initial size (30 MiB here); `INITIAL_MEMORY` is set but has no effect because
//     the module defines its own memory. A bigger snapshot fails with
//     "RangeError: offset is out of bounds". We grow memory first (`Module.growMemory`) through
//     the `createPyodideModule` hook, unless --no-grow.
//   * measured on 314.0.7 / Node 20: a snapshot taken after `import pydantic` (pydantic_core's
//     `.so` loaded) restores and imports fine, then the first request that validates dies with
//     a Pyodide fatal error "RuntimeError: table index is out of bounds" (reported here as
//     {"ok": false, "phase": "request", "pyodide_fatal": true}). `make` lists such modules in
//     `so_modules`; use pure-Python workloads.
//   * the CPython trampoline pointer is written into the heap by a preRun hook and then
//     overwritten by the snapshot's copy; on Node 20 it is 0 in both (no wasm GC: every indirect
//     call goes through `_PyEM_TrampolineCall_JS`), so this is harmless here.
//   * the first event-loop turn after a restore waits 70-250 ms for V8's background tier-up of
//     the freshly compiled 9.6 MB module (`WebAssembly.instantiate` is asynchronous); that shows
//     in first_response_ms. `node --liftoff-only` or `--no-wasm-async-compilation` remove it.
//   * restored processes share the snapshot's hash secret and `random` state (not reseeded).
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const T0_PERF = performance.now(); // ms since the process started (Node's time origin)
const T0_HR = process.hrtime.bigint();
const hrMs = () => Number(process.hrtime.bigint() - T0_HR) / 1e6;

const SITE_MOUNT = "/peer/site-packages";
const APP_MOUNT = "/peer/app";
const round = (x) => Math.round(x * 1000) / 1000;

// The ASGI driver, defined inside Pyodide as module `_peer_asgi` (in the snapshot for `run`).
const DRIVER = String.raw`
import asyncio, sys, types

_src = '''
import asyncio

async def first_response(app, path="/"):
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"localhost"), (b"user-agent", b"pyworkers-bench")],
        "client": ("127.0.0.1", 50000), "server": ("localhost", 80),
    }
    done = asyncio.Event()
    state = {"sent_request": False, "status": None, "headers": None, "body": bytearray()}

    async def receive():
        if not state["sent_request"]:
            state["sent_request"] = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        kind = message["type"]
        if kind == "http.response.start":
            state["status"] = message["status"]
            state["headers"] = message.get("headers", [])
        elif kind == "http.response.body":
            state["body"] += message.get("body", b"")
            if not message.get("more_body", False):
                done.set()

    await app(scope, receive, send)
    done.set()
    return [state["status"], len(state["body"]), bytes(state["body"][:200]).decode("utf-8", "replace")]
'''
_m = types.ModuleType("_peer_asgi")
exec(compile(_src, "<_peer_asgi>", "exec"), _m.__dict__)
sys.modules["_peer_asgi"] = _m
`;

function parseArgs(argv) {
  const mode = argv[0];
  const opts = { _: [] };
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) { opts._.push(a); continue; }
    const key = a.slice(2);
    if (["freeze", "no-grow"].includes(key)) opts[key] = true;
    else opts[key] = argv[++i];
  }
  return { mode, opts };
}

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

// Pyodide reports fatal errors (e.g. a trap in wasm) from event-loop callbacks, outside our
// try/catch: report those as a failed step too.
const current = { mode: null, phase: null };
for (const ev of ["uncaughtException", "unhandledRejection"]) {
  process.on(ev, (err) => fail(current.mode, current.phase, err, ev));
}

function fail(mode, phase, err, how) {
  if (fail.done) process.exit(1);
  fail.done = true;
  const msg = err && err.message ? err.message : String(err);
  out({ ok: false, mode, phase, error: msg.split("\n").filter(Boolean).slice(-3).join(" | "),
        error_type: err && err.name ? err.name : typeof err,
        pyodide_fatal: !!(err && err.pyodide_fatal_error), uncaught: how || null });
  if (err && err.stack) process.stderr.write(String(err.stack) + "\n");
  process.exit(1);
}

function packageDir(opts, meta) {
  let dir = opts.package || (meta && meta.package);
  if (!dir) throw new Error("--package DIR (the Pyodide npm package directory) is required");
  dir = path.resolve(dir);
  if (!fs.existsSync(path.join(dir, "pyodide.mjs"))) throw new Error(`no pyodide.mjs in ${dir}`);
  return dir + path.sep;
}

// fsInit hook: mount host directories read through NODEFS (the JS file system is not part of a
// memory snapshot, so `run` mounts again at the same places).
function mountsHook(mounts) {
  return async (FS) => {
    for (const [where, host] of mounts) {
      FS.mkdirTree(where);
      FS.mount(FS.filesystems.NODEFS, { root: host }, where);
    }
  };
}

function mountList(site, app) {
  const m = [];
  if (site) m.push([SITE_MOUNT, path.resolve(site)]);
  if (app) m.push([APP_MOUNT, path.resolve(app)]);
  return m;
}

function splitEntry(entry) {
  const [mod, attr] = (entry || "main:app").split(":");
  return { mod, attr: attr || "app" };
}

const quietIO = {
  stdout: (s) => process.stderr.write(s + "\n"),
  stderr: (s) => process.stderr.write(s + "\n"),
};

async function firstResponse(py, reqPath) {
  const res = await py.runPythonAsync(
    `import _peer_asgi\nawait _peer_asgi.first_response(_peer_app, ${JSON.stringify(reqPath)})`);
  const [status, bodyLen, bodyHead] = res.toJs();
  res.destroy();
  return { status, body_len: bodyLen, body_head: bodyHead };
}

function setupApp(py, sysPath, entry) {
  // sys.path as recorded (loadPyodide inserts "" again after a restore), then the app object.
  const { mod, attr } = splitEntry(entry);
  py.globals.set("_peer_sys_path", py.toPy(sysPath));
  py.runPython(
    `import sys, importlib\nsys.path[:] = list(_peer_sys_path)\ndel _peer_sys_path\n` +
    `_peer_app = getattr(importlib.import_module(${JSON.stringify(mod)}), ${JSON.stringify(attr)})`);
}

async function makeMode(opts) {
  current.mode = "make";
  let phase = current.phase = "load";
  try {
    const pkg = packageDir(opts);
    if (!opts.out) throw new Error("--out FILE is required");
    const mounts = mountList(opts.site, opts.app);
    const { loadPyodide } = await import(pathToFileURL(pkg + "pyodide.mjs").href);
    const t0 = hrMs();
    const py = await loadPyodide({ indexURL: pkg, _makeSnapshot: true, fsInit: mountsHook(mounts),
                                   ...quietIO });
    const tBoot = hrMs();
    phase = current.phase = "import";
    const extra = [];
    if (opts.app) extra.push(APP_MOUNT);
    if (opts.site) extra.push(SITE_MOUNT);
    py.globals.set("_peer_extra", py.toPy(extra));
    py.runPython(`import sys\nsys.path[1:1] = list(_peer_extra)\ndel _peer_extra`);
    py.runPython(DRIVER);
    setupApp(py, py.runPython("import sys; list(sys.path)").toJs(), opts.entry);
    const sysPath = py.runPython("import sys; list(sys.path)").toJs();
    const soModules = py.runPython(
      `import sys\n[m for m, v in list(sys.modules.items()) ` +
      `if (getattr(v, "__file__", None) or "").endswith(".so")]`).toJs();
    const tImport = hrMs();
    phase = current.phase = "snapshot";
    if (opts.freeze) py.runPython("import gc; gc.collect(); gc.freeze()");
    const snap = py.makeMemorySnapshot();
    fs.writeFileSync(opts.out, snap);
    const heapBytes = py._module.HEAP8.length;
    const meta = {
      format: 1, pyodide: py.version, package: pkg, mounts, sys_path: sysPath, entry: opts.entry || "main:app",
      heap_bytes: heapBytes, file_bytes: snap.length, freeze: !!opts.freeze, so_modules: soModules,
    };
    fs.writeFileSync(opts.out + ".json", JSON.stringify(meta, null, 1));
    out({ ok: true, mode: "make", pyodide: py.version, boot_ms: round(tBoot - t0),
          import_ms: round(tImport - tBoot), snapshot_ms: round(hrMs() - tImport),
          heap_bytes: heapBytes, file_bytes: snap.length, so_modules: soModules,
          total_ms: round(performance.now()) });
    process.exit(0);
  } catch (e) {
    fail("make", phase, e);
  }
}

async function runMode(opts) {
  current.mode = "run";
  let phase = current.phase = "read";
  try {
    if (!opts.snapshot) throw new Error("--snapshot FILE is required");
    const meta = JSON.parse(fs.readFileSync(opts.snapshot + ".json", "utf8"));
    const pkg = packageDir(opts, meta);
    const tStart = hrMs();
    const { loadPyodide } = await import(pathToFileURL(pkg + "pyodide.mjs").href);
    const buf = fs.readFileSync(opts.snapshot);
    const snap = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    const tRead = hrMs();
    phase = current.phase = "restore";
    const config = { indexURL: pkg, _loadSnapshot: snap, fsInit: mountsHook(meta.mounts), ...quietIO };
    let grownFrom = null;
    if (!opts["no-grow"]) {
      // Pyodide restores with Module.HEAP8.set(memory) into the module's initial memory: grow it
      // to the snapshot's memory size first.
      const create = (await import(pathToFileURL(pkg + "pyodide.asm.mjs").href)).default;
      // Header: u32 magic, u32 offset of the memory image, ...; the image runs to the end.
      const memBytes = snap.byteLength - new DataView(snap.buffer, snap.byteOffset, 8).getUint32(4, true);
      config.createPyodideModule = async (settings) => {
        const mod = await create(settings);
        if (mod.HEAP8.length < memBytes) {
          grownFrom = mod.HEAP8.length;
          if (!mod.growMemory(memBytes)) throw new Error(`could not grow memory to ${memBytes} bytes`);
        }
        return mod;
      };
    }
    const py = await loadPyodide(config);
    const tBoot = hrMs();
    phase = current.phase = "app";
    setupApp(py, meta.sys_path, meta.entry);
    const tApp = hrMs();
    phase = current.phase = "request";
    const r = await firstResponse(py, opts.path || "/");
    const tFirst = hrMs();
    const totalPerf = performance.now();
    out({ ok: r.status !== null && r.status !== undefined, mode: "run", pyodide: py.version,
          status: r.status, body_len: r.body_len, body_head: r.body_head,
          node_start_ms: round(T0_PERF),            // process start -> this script runs
          import_pyodide_ms: round(tRead - tStart), // import pyodide.mjs + read the snapshot
          boot_ms: round(tBoot - tRead),            // loadPyodide with _loadSnapshot (restore)
          app_ms: round(tApp - tBoot),              // sys.path + look up the app (imported already)
          first_response_ms: round(tFirst - tApp),  // the ASGI call
          total_ms: round(totalPerf),               // process start -> first response
          total_hr_ms: round(T0_PERF + tFirst),     // the same from process.hrtime
          heap_bytes: meta.heap_bytes, grown_from: grownFrom, freeze: meta.freeze });
    process.exit(0);
  } catch (e) {
    fail("run", phase, e);
  }
}

async function coldMode(opts) {
  current.mode = "cold";
  let phase = current.phase = "load";
  try {
    const pkg = packageDir(opts);
    const mounts = mountList(opts.site, opts.app);
    const tStart = hrMs();
    const { loadPyodide } = await import(pathToFileURL(pkg + "pyodide.mjs").href);
    const tImp = hrMs();
    const py = await loadPyodide({ indexURL: pkg, fsInit: mountsHook(mounts), ...quietIO });
    const tBoot = hrMs();
    phase = current.phase = "import";
    const sysPath = py.runPython("import sys; list(sys.path)").toJs();
    sysPath.splice(1, 0, ...mounts.map((m) => m[0]).reverse());
    py.runPython(DRIVER);
    setupApp(py, sysPath, opts.entry);
    const tApp = hrMs();
    phase = current.phase = "request";
    const r = await firstResponse(py, opts.path || "/");
    const tFirst = hrMs();
    const totalPerf = performance.now();
    out({ ok: r.status !== null && r.status !== undefined, mode: "cold", pyodide: py.version,
          status: r.status, body_len: r.body_len, body_head: r.body_head,
          node_start_ms: round(T0_PERF), import_pyodide_ms: round(tImp - tStart),
          boot_ms: round(tBoot - tImp), app_ms: round(tApp - tBoot),
          first_response_ms: round(tFirst - tApp), total_ms: round(totalPerf),
          total_hr_ms: round(T0_PERF + tFirst) });
    process.exit(0);
  } catch (e) {
    fail("cold", phase, e);
  }
}

const { mode, opts } = parseArgs(process.argv.slice(2));
if (mode === "make") await makeMode(opts);
else if (mode === "run") await runMode(opts);
else if (mode === "cold") await coldMode(opts);
else {
  process.stderr.write("usage: node node_peer.mjs make|run|cold [options] (see the header)\n");
  process.exit(2);
}
