"""The node's read-only status web page (opt-in: `node start --status-port PORT`, loopback by default).

    page = StatusPage.start(node, "127.0.0.1:7480")   # http://127.0.0.1:7480/
    page.stop()

Routes: `/` the page, `/fragment` its body (what the page's script swaps in every few seconds),
`/state.json` the document it is drawn from (`node.process.status_state.node_state`), and the
page's own script and style. Names, ids and reasons come from peers and are hostile: every
value is passed through `html.escape` here, and the Content-Security-Policy allows no inline
script, so a string that slipped through could still not run.
"""

from __future__ import annotations

import html
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from node.errors import NodeError
from node.process.web import WebEndpoint

log = logging.getLogger(__name__)

REFRESH_S = 3  # how often the page refetches its body
STATE_TTL_S = 1.0  # requests within this long of each other share one state read (holders ask the DHT)
CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; base-uri 'none'"

SCRIPT = f"""// Refetch the server-rendered (escaped) body every {REFRESH_S} s.
setInterval(async () => {{
  try {{
    const reply = await fetch("/fragment", {{cache: "no-store"}});
    if (reply.ok) document.getElementById("root").innerHTML = await reply.text();
  }} catch (e) {{ /* node stopping: keep the last view */ }}
}}, {REFRESH_S * 1000});
"""

STYLE = """body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; } td, th { padding: 2px 10px 2px 0; text-align: left; vertical-align: top; }
code { font-size: 12px; } .ok { color: #070; } .bad { color: #b00; } .muted { color: #777; }
ul.tree { margin: 0.2em 0; } pre { background: #f6f6f6; padding: 4px; margin: 2px 0; font-size: 12px; }
"""


def e(value: Any) -> str:
    """Escape anything for HTML text and attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


def _when(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts else "-"


def _table(cls: str, headers: Iterable[str], rows: list[str]) -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    return f'<table class="{cls}"><tr>{head}</tr>{"".join(rows)}</table>' if rows else '<p class="muted">none</p>'


def _peers(doc: dict[str, Any]) -> str:
    rows = [f'<tr class="peer" data-addr="{e(p["addr"])}"><td><code>{e(p["addr"])}</code></td>'
            f'<td><code>{e(p["key_id"][:16])}</code></td><td>{e(p["source"])}</td>'
            + (f'<td class="bad">bad: {e(p["bad_reason"])}</td>' if p["bad"] else '<td class="ok">ok</td>')
            + f'<td>{e(_when(p["last_seen"]))}</td></tr>' for p in doc["peers"]]
    return _table("peers", ("address", "key", "source", "state", "last seen"), rows)


def _attested(atts: list[dict[str, Any]]) -> str:
    return ", ".join(f'<span class="{"ok" if a["passed"] else "bad"}"><code>{e(a["signer"][:16])}</code> '
                     f'{"pass" if a["passed"] else "fail"}</span>' for a in atts) or '<span class="muted">none</span>'


def _models(doc: dict[str, Any]) -> str:
    rows = []
    for m in doc["models"]:
        trust = '<span class="ok">trusted</span>' if m["trusted"] else '<span class="muted">untrusted</span>'
        holders = ", ".join(f"<code>{e(h)}</code>" for h in m["holders"])
        rows.append(f'<tr class="model" data-id="{e(m["id"])}"><td><code class="model-id">{e(m["id"])}</code></td>'
                    f'<td>{e(m["name"])}</td><td>{e(m["kind"])}</td><td>{trust} <code>{e(m["signer"][:16])}</code>'
                    f'</td><td>{e(m["license"] or "-")}</td><td>{_attested(m["attestations"])}</td>'
                    f'<td class="holders" data-count="{len(m["holders"])}">{len(m["holders"])}: {holders}</td></tr>')
    return _table("models", ("id", "name", "kind", "signer", "license", "attestations", "holders"), rows)


def _timeline(history: list[dict[str, Any]]) -> str:
    return " → ".join(f'<span title="{e(h["reason"])}">{e(h["state"])} <span class="muted">{e(_when(h["time"]))}'
                      f'</span></span>' for h in history)


def _plans(doc: dict[str, Any]) -> str:
    rows = []
    for p in doc["plans"]:
        result = p["result"] or {}
        rows.append(f'<tr class="plan" data-id="{e(p["plan_id"])}" data-state="{e(p["state"])}">'
                    f'<td><code>{e(p["plan_id"][:23])}</code></td><td class="state">{e(p["state"])}</td>'
                    f'<td>{e(p["method"])}</td><td>{_timeline(p["history"])}<br><span class="muted">'
                    f'{e(p["reason"])}</span></td><td><code>{e(result.get("model_id") or "")}</code></td></tr>')
    return _table("plans", ("plan", "state", "method", "timeline", "result"), rows)


def _tree(prov: dict[str, Any] | None) -> str:
    if prov is None:
        return ""
    if "error" in prov:
        return f'<p class="bad">unreadable provenance: {e(prov["error"])}</p>'
    items = []
    for i in prov["inputs"]:
        name = f' {e(i["name"])}' if i.get("name") else ""
        ident = f'<code>{e(i["id"])}</code>' if i["id"] else f'<code>{e(i["ref"])}</code> {e(i["digests"] or "")}'
        below = _tree(i.get("provenance"))
        attested = f' attested by {_attested(i["attestations"])}' if i.get("attestations") and below else ""
        items.append(f'<li class="input"><b>{e(i["role"])}</b>{name} {ident}{attested}{below}</li>')
    recipe = json.dumps(prov["recipe"], indent=1, sort_keys=True)
    return (f'<div class="provenance">method <b>{e(prov["method"])}</b> on {e(prov["device"])}'
            f' · plan <code>{e(prov["plan_id"] or "-")}</code> · executor <code>{e((prov["executor"] or "-")[:16])}'
            f'</code><details><summary>recipe</summary><pre>{e(recipe)}</pre></details>'
            f'<ul class="tree">{"".join(items)}</ul></div>')


def _provenance(doc: dict[str, Any]) -> str:
    merged = [m for m in doc["models"] if m["provenance"] is not None]
    if not merged:
        return '<p class="muted">no merged models</p>'
    return "".join(f'<div class="merged" data-id="{e(m["id"])}"><h3>{e(m["name"])} <code>{e(m["id"])}</code></h3>'
                   f'attested by {_attested(m["attestations"])}{_tree(m["provenance"])}</div>' for m in merged)


def _transfers(doc: dict[str, Any]) -> str:
    rows = [f'<tr class="transfer"><td>{e(t["direction"])}</td><td><code>{e(t["what"])}</code></td>'
            f'<td><code>{e(t["peer"])}</code></td><td>{t["done_bytes"]} / {t["total_bytes"] or "?"} B</td>'
            f'<td>{e(_when(t["started"]))}</td></tr>' for t in doc["transfers"]]
    return _table("transfers", ("direction", "blob or model", "peer", "bytes", "started"), rows)


def render_fragment(doc: dict[str, Any]) -> str:
    """The page body for one state document."""
    n = doc["node"]
    sections = [("peers", "Peers", len(doc["peers"]), _peers(doc)),
                ("models", "Models", len(doc["models"]), _models(doc)),
                ("plans", "Plans", len(doc["plans"]), _plans(doc)),
                ("provenance", "Provenance of merged models", None, _provenance(doc)),
                ("transfers", "Transfers in progress", len(doc["transfers"]), _transfers(doc))]
    body = "".join(f'<section id="{sid}"' + (f' data-count="{count}"' if count is not None else "")
                   + f'><h2>{e(title)}' + (f' (<span class="count">{count}</span>)' if count is not None else "")
                   + f"</h2>{content}</section>" for sid, title, count, content in sections)
    return (f'<h1>mergenet node <code id="node-addr">{e(n["addr"])}</code></h1>'
            f'<p class="muted">key <code>{e(n["key_id"])}</code> · {e(n["version"])} · '
            f'DHT {"on" if n["dht"] else "off"}'
            f' · updated <span id="updated">{e(_when(doc["generated"]))}</span></p>{body}')


def render_page(doc: dict[str, Any]) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>mergenet node {e(doc["node"]["addr"])}'
            f'</title><link rel="stylesheet" href="/page.css"><script src="/page.js" defer></script>'
            f'<noscript><meta http-equiv="refresh" content="{REFRESH_S}"></noscript></head>'
            f'<body><div id="root">{render_fragment(doc)}</div></body></html>')


class _CachedState:
    """One state read shared by the requests that arrive within STATE_TTL_S of it."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._doc: dict[str, Any] | None = None
        self._at = 0.0

    def get(self) -> dict[str, Any]:
        with self._lock:
            if self._doc is None or time.monotonic() - self._at > STATE_TTL_S:
                self._doc, self._at = self._read(), time.monotonic()
            return self._doc


def _handler(state: _CachedState) -> type[BaseHTTPRequestHandler]:
    routes: dict[str, tuple[str, Callable[[], str]]] = {
        "/": ("text/html", lambda: render_page(state.get())),
        "/fragment": ("text/html", lambda: render_fragment(state.get())),
        "/state.json": ("application/json", lambda: json.dumps(state.get())),
        "/page.js": ("text/javascript", lambda: SCRIPT),
        "/page.css": ("text/css", lambda: STYLE),
    }

    class Handler(BaseHTTPRequestHandler):
        server_version = "mergenet-status"

        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                self.send_error(404)
                return
            ctype, make = route
            body = make().encode()
            self.send_response(200)
            self.send_header("Content-Type", f"{ctype}; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("status page: " + format, *args)

    return Handler


class StatusPage(WebEndpoint):
    """The page's HTTP server, on a thread of its own."""

    name = "status"  # its key in node.json

    @classmethod
    def start(cls, node: Any, listen: str) -> StatusPage:
        """Serve `node`'s page on `listen` (HOST:PORT; port 0 picks one); NodeError if it cannot bind."""
        from node.process.config import parse_hostport
        from node.process.status_state import node_state

        host, port = parse_hostport(listen, "--status-port")
        try:
            server = ThreadingHTTPServer((host, port), _handler(_CachedState(lambda: node_state(node))))
        except OSError as exc:
            raise NodeError(f"cannot serve the status page on {listen}: {exc.strerror or exc}") from None
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name="status-page", daemon=True)
        thread.start()
        addr = f"{host}:{server.server_address[1]}"
        log.info("status page on http://%s/", addr)
        return cls(server, thread, addr)
