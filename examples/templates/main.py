"""Server-side HTML with Jinja2 templates (autoescaped), YAML parsing and time zones.

Jinja2 needs MarkupSafe and PyYAML is used for YAML: on a runtime whose own package set is not
reachable, pyworkers builds both as pure-Python wheels from their sdists. zoneinfo reads the
``tzdata`` wheel every layer gets. Runs unchanged under ``uvicorn main:app``.
"""
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

app = FastAPI(title="templates")
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")

ITEMS = [
    {"name": "hammer", "price": 9.5, "note": None},
    {"name": "saw <steel>", "price": 12.25, "note": "\"sharp\" & 'long'"},
    {"name": "nails", "price": 0.05, "note": "<script>alert(1)</script>"},
]
PARIS = ZoneInfo("Europe/Paris")


def paris(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).astimezone(PARIS).isoformat()


@app.get("/", response_class=HTMLResponse)
def index(request: Request, name: str = "<World> & friends"):
    return templates.TemplateResponse(request, "index.html", {
        "title": "Tools & <things>", "name": name, "items": ITEMS,
        "paris": paris(1782900000)})


@app.post("/yaml")
async def parse_yaml(request: Request):
    try:
        data = yaml.safe_load(await request.body())
    except yaml.YAMLError as e:
        return {"error": type(e).__name__, "problem": getattr(e, "problem", None)}
    return {"data": data, "type": type(data).__name__}


@app.get("/tz")
def tz(ts: float = 1782900000, zone: str = "Europe/Paris"):
    z = ZoneInfo(zone)
    t = datetime.fromtimestamp(ts, timezone.utc).astimezone(z)
    return {"zone": zone, "local": t.isoformat(), "tzname": t.tzname(),
            "utcoffset_s": t.utcoffset().total_seconds(),
            "winter": datetime(2026, 1, 15, 12, tzinfo=timezone.utc).astimezone(z).isoformat()}


@app.get("/engine")
def engine():
    import markupsafe

    # Which MarkupSafe escape runs: the pure one (_native) or the C speedups.
    return {"markupsafe": markupsafe.__version__,
            "escape": markupsafe._escape_inner.__module__,
            "yaml_c": yaml.__with_libyaml__}
