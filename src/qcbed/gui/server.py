"""The app's HTTP server: static page + a small JSON/PNG API over a :class:`Session`.

Standard library only (:class:`http.server.ThreadingHTTPServer`); the page is
hand-written HTML/CSS/JavaScript shipped in ``qcbed/gui/static`` (no build step,
no network). It binds to 127.0.0.1 unless told otherwise.

API (all under ``/api``; errors are ``{"error": ...}`` with status 400):

========================  ======  ===================================================
path                      method  what
========================  ======  ===================================================
``info``                  GET     dataset, reflections, grid extent, plan
``state``                 GET     parameters, ZNCC, level, timings, refinement status
``params``                POST    change parameters (JSON, see ``Session.update``)
``image?i=&kind=&cmap=``  GET     PNG of reflection i: ``exp``, ``sim`` or ``diff``
``thumb?i=``              GET     small PNG of reflection i
``profile?i=&r0&c0&r1&c1``GET     line profile (display pixels)
``roi``                   POST    ``{"regions": [...]}`` → sample counts
``export``                POST    ``{"path": optional}`` → the project file written
``project.toml``          GET     the current state as a project file (download)
``refine``                POST    ``{"what": "coarse"|"fine"|"plan", "max_iter"?}``
``stop`` / ``resume``     POST    stop / resume the refinement
``results``               GET     the results folder (parameters, esd, correlation)
``figure?name=``          GET     a figure of the results folder
========================  ======  ===================================================
"""

from __future__ import annotations

import json
import math
import threading
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlparse

from ..errors import QcbedError
from .session import Session

__all__ = ["make_server", "serve", "start_in_thread"]

_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}


def _static(name: str) -> bytes | None:
    if not name or "/" in name or name.startswith("."):
        return None
    f = resources.files("qcbed.gui").joinpath("static", name)
    return f.read_bytes() if f.is_file() else None


def _finite(obj: Any) -> Any:
    """JSON-ready copy with NaN/inf → None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


class _Handler(BaseHTTPRequestHandler):
    session: Session
    server_version = "qcbed-gui"

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet by default
        pass

    # ------------------------------------------------------------ replies
    def _send(self, body: bytes, ctype: str, status: int = 200, cache: bool = False,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(json.dumps(_finite(obj), allow_nan=False).encode(), "application/json",
                   status)

    def _body(self) -> dict:
        n = int(self.headers.get("Content-Length") or 0)
        if not n:
            return {}
        data = json.loads(self.rfile.read(n).decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("the request body must be a JSON object")
        return data

    def _dispatch(self, method: str) -> None:
        url = urlparse(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if url.path == "/" or url.path == "/index.html":
                body = _static("index.html")
                assert body is not None
                self._send(body, _TYPES[".html"])
            elif url.path == "/favicon.ico":
                self._send(b"", "image/x-icon", HTTPStatus.NO_CONTENT)
            elif url.path.startswith("/static/"):
                name = url.path[len("/static/"):]
                body = _static(name)
                if body is None:
                    self._json({"error": f"no such file: {name}"}, 404)
                else:
                    ext = name[name.rfind("."):]
                    self._send(body, _TYPES.get(ext, "application/octet-stream"))
            elif url.path.startswith("/api/"):
                self._api(method, url.path[5:], q)
            else:
                self._json({"error": f"not found: {url.path}"}, 404)
        except (QcbedError, ValueError, KeyError, RuntimeError) as exc:
            self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # ------------------------------------------------------------ API
    def _api(self, method: str, name: str, q: dict[str, str]) -> None:
        s = self.session
        get = method == "GET"
        if get and name == "info":
            self._json(s.info())
        elif get and name == "state":
            self._json(s.state())
        elif get and name == "image":
            self._send(s.image_png(int(q["i"]), q.get("kind", "exp"), q.get("cmap", "gray")),
                       "image/png")
        elif get and name == "thumb":
            self._send(s.thumb_png(int(q["i"]), q.get("cmap", "gray")), "image/png")
        elif get and name == "profile":
            self._json(s.line_profile(int(q["i"]), [float(q["r0"]), float(q["c0"])],
                                      [float(q["r1"]), float(q["c1"])]))
        elif get and name == "project.toml":
            from ..project import dumps_toml

            raw, comments = s.project_dict()
            self._send(dumps_toml(raw, comments).encode(), "application/toml; charset=utf-8",
                       extra={"Content-Disposition": 'attachment; filename="project.toml"'})
        elif get and name == "results":
            from .results import load_results

            folder = s.results_dir
            if folder is None:
                self._json({"error": "no results yet (run a refinement, or open a results "
                                     "folder)"}, 404)
            else:
                self._json(load_results(folder))
        elif get and name == "figure":
            from .results import figure_path

            if s.results_dir is None:
                self._json({"error": "no results folder"}, 404)
            else:
                p = figure_path(s.results_dir, q.get("name", ""))
                self._send(p.read_bytes(), _TYPES.get(p.suffix, "application/octet-stream"))
        elif not get and name == "params":
            self._json(s.update(self._body()))
        elif not get and name == "roi":
            self._json(s.set_regions(self._body().get("regions", [])))
        elif not get and name == "export":
            path = s.export_project(self._body().get("path") or None)
            self._json({"path": str(path), "text": path.read_text(encoding="utf-8")})
        elif not get and name == "refine":
            b = self._body()
            mi = b.get("max_iter")
            self._json(s.start_refinement(b.get("what", "plan"),
                                          max_iter=None if mi in (None, "") else int(mi)))
        elif not get and name == "stop":
            self._json(s.stop_refinement())
        elif not get and name == "resume":
            self._json(s.resume_refinement())
        else:
            self._json({"error": f"unknown API call: {method} /api/{name}"}, 404)


def make_server(session: Session, host: str = "127.0.0.1", port: int = 8050
                ) -> ThreadingHTTPServer:
    """An HTTP server for ``session`` bound to ``host:port`` (port 0: any free port)."""
    handler = type("Handler", (_Handler,), {"session": session})
    srv = ThreadingHTTPServer((host, int(port)), handler)
    srv.daemon_threads = True
    return srv


def start_in_thread(session: Session, host: str = "127.0.0.1", port: int = 0
                    ) -> tuple[ThreadingHTTPServer, str]:
    """Serve ``session`` from a daemon thread; returns (server, URL). For notebooks and tests."""
    srv = make_server(session, host, port)
    threading.Thread(target=srv.serve_forever, daemon=True, name="qcbed-gui-http").start()
    h, p = srv.server_address[:2]
    return srv, f"http://{h}:{p}/"


def serve(session: Session, host: str = "127.0.0.1", port: int = 8050, *,
          open_browser: bool = True, log=print) -> None:
    """Serve ``session`` until interrupted (Ctrl-C)."""
    srv = make_server(session, host, port)
    h, p = srv.server_address[:2]
    url = f"http://{h}:{p}/"
    log(f"qcbed gui: {session.title} at {url} (Ctrl-C to stop)")
    if open_browser:
        threading.Timer(0.3, lambda: webbrowser.open(url)).start()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        log("stopped")
    finally:
        srv.server_close()
