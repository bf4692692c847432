"""``posenas latency-server``: measures ONNX models sent over HTTP on the device it runs on.

GET /fingerprint -> the device fingerprint (JSON). POST /measure?resolution=R&threads=T&... with
the ONNX model as the body -> the timing figures (JSON). One request is measured at a time, so
concurrent clients never disturb each other's timings.
"""
from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

from nas.errors import PoseNASError
from nas.latency.meter import device_fingerprint, time_onnx
from nas.latency.settings import RuntimeSettings

MAX_MODEL_BYTES = 512 * 1024 * 1024


class Handler(BaseHTTPRequestHandler):
    fingerprint: dict = {}

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
            settings = RuntimeSettings(threads=int(q.get("threads", 2)), provider=q.get("provider", "CPUExecutionProvider"),
                                       optimization=q.get("optimization", "all"), warmup=int(q.get("warmup", 10)),
                                       repeats=int(q.get("repeats", 50)))
            figures = time_onnx(self.rfile.read(length), int(q["resolution"]), settings)
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
