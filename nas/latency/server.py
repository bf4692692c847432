"""``posenas latency-server``: measures ONNX models sent over HTTP on the device it runs on.

GET /fingerprint -> the device fingerprint (JSON). POST /measure?resolution=R&multi_resolution=M&
keypoints=K&<runtime settings> with the ONNX model as the body (a network, or with latency_of=total
a deployed model) -> the figures of ``measure_model`` (JSON), timed against the reference network
calibrated on this device. One request is measured at a time, so concurrent clients never disturb
each other's timings.
"""
from __future__ import annotations

import json
from dataclasses import fields
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

from nas.config import typed
from nas.errors import PoseNASError
from nas.latency.meter import device_fingerprint, fingerprint_key, measure_model
from nas.latency.postprocess import spec_of
from nas.latency.settings import RuntimeSettings
from nas.latency.stopwatch import Stopwatch

MAX_MODEL_BYTES = 512 * 1024 * 1024
MAX_SETTINGS = 32  # stopwatches kept (one per runtime settings a client asked for)


SETTINGS = {f.name: f.type for f in fields(RuntimeSettings)}  # name: "str", "int" or "bool"


def flag(value: str, name: str) -> bool:
    if value not in ("True", "False", "1", "0", "true", "false"):
        raise PoseNASError(f"{name} must be true or false, got {value!r}")
    return value in ("True", "1", "true")


def measurement_settings(q: dict) -> RuntimeSettings:
    """The runtime settings of a request's query (defaults for those it leaves out)."""
    given = {}
    for name, kind in SETTINGS.items():
        if name in q:
            value = q[name]
            given[name] = flag(value, name) if kind == "bool" else int(value) if kind == "int" else value
    return typed(RuntimeSettings, given, "query")


class Handler(BaseHTTPRequestHandler):
    fingerprint: dict = {}
    watches: dict = {}  # a stopwatch per runtime settings, each calibrated once

    def _reply(self, code: int, payload) -> None:
        body = (json.dumps(payload) if code == 200 else str(payload)).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json" if code == 200 else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if urlparse(self.path).path == "/fingerprint":
            self._reply(200, self.fingerprint)
        else:
            self._reply(404, "unknown path; use GET /fingerprint or POST /measure")

    def do_POST(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        if url.path != "/measure":
            self._reply(404, "unknown path; use POST /measure")
            return
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            length = int(self.headers.get("Content-Length", "0"))
            if not 0 < length <= MAX_MODEL_BYTES:
                raise PoseNASError(f"body must be an ONNX model of 1 byte to {MAX_MODEL_BYTES} bytes, got {length}")
            settings = measurement_settings(q)
            if settings.backend != "onnxruntime":
                raise PoseNASError("backend must be onnxruntime: the server measures ONNX models")
            keypoints = int(q.get("keypoints", 17))
            spec_of(keypoints)
            resolution = int(q["resolution"])
            if not 32 <= resolution <= 4096:
                raise PoseNASError(f"resolution {resolution}: give 32 to 4096")
            if settings.key() not in self.watches:
                if len(self.watches) >= MAX_SETTINGS:
                    self.watches.clear()
                self.watches[settings.key()] = Stopwatch(settings, fingerprint_key(self.fingerprint))
            figures = measure_model(self.rfile.read(length), resolution,
                                    flag(q.get("multi_resolution", "0"), "multi_resolution"), keypoints, settings,
                                    self.watches[settings.key()])
        except (PoseNASError, KeyError, ValueError) as e:
            self._reply(400, f"bad request: {e}")
            return
        except Exception as e:  # noqa: BLE001 - onnxruntime rejects the model
            self._reply(400, f"model not runnable: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            return
        self._reply(200, figures)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        print(f"latency-server: {self.address_string()} {format % args}", flush=True)


def serve(port: int, host: str = "127.0.0.1") -> None:
    Handler.fingerprint = device_fingerprint()
    server = HTTPServer((host, port), Handler)
    print(f"latency-server: measuring on {Handler.fingerprint['cpu']} at http://{host}:{server.server_port}",
          flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
