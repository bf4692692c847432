"""``posenas latency-server``: measures ONNX models sent over HTTP on the device it runs on.

GET /fingerprint -> the device fingerprint (JSON). POST /measure?resolution=R&multi_resolution=M&
keypoints=K&<runtime settings> with the ONNX model as the body (a network, or with latency_of=total
a deployed model) -> the figures of the runtime's ``measure_model`` (JSON), timed against the
reference network calibrated on this device.

It listens on a network, so it trusts nothing: with a token (``nas.latency.token``) every request
must carry it, and without one it binds loopback only; every parameter is bounded and the model's
declared input checked before any work; each connection has a thread of its own with a socket
timeout and a body deadline (so a slow client holds nobody), at most ``MAX_CONNECTIONS`` at once;
and measurements run one at a time, so concurrent clients never disturb each other's timings.
"""
from __future__ import annotations

import hmac
import json
import os
import threading
import time
from dataclasses import fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from nas.config import typed
from nas.errors import PoseNASError
from nas.latency.meter import device_fingerprint, fingerprint_key
from nas.latency.runtimes import installed_versions, runtime_of
from nas.latency.settings import RuntimeSettings
from nas.latency.stopwatch import Stopwatch
from nas.latency.token import check_exposure
from nas.pose.crowd import spec_of

MAX_MODEL_BYTES = 256 * 1024 * 1024  # HigherHRNet-W32 in float32 is about 115 MB
MAX_REPEATS, MAX_WARMUP = 1000, 100  # a measurement holds the device: minutes at most, not hours
RESOLUTIONS = (32, 2048)
MAX_SETTINGS = 32  # stopwatches kept (one per runtime settings a client asked for)
MAX_CONNECTIONS = 16
BODY_SECONDS = 120  # the whole body must arrive in this time, however it trickles

SETTINGS = {f.name: f.type for f in fields(RuntimeSettings)}  # name: "str", "int" or "bool"


def flag(value: str, name: str) -> bool:
    if value not in ("True", "False", "1", "0", "true", "false"):
        raise PoseNASError(f"{name} must be true or false, got {value!r}")
    return value in ("True", "1", "true")


def integer(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise PoseNASError(f"{name} must be an integer, got {value[:40]!r}") from None


def measurement_settings(q: dict, cores: int, providers: list[str]) -> RuntimeSettings:
    """The runtime settings of a request's query (defaults for those it leaves out), within what
    this device and server allow."""
    given = {}
    for name, kind in SETTINGS.items():
        if name in q:
            value = q[name]
            given[name] = flag(value, name) if kind == "bool" else integer(value, name) if kind == "int" else value
    settings = typed(RuntimeSettings, given, "query")
    if not runtime_of(settings).deployment:
        raise PoseNASError(f"backend {settings.backend}: the server measures exported models in a deployment runtime")
    if settings.threads > cores:
        raise PoseNASError(f"threads {settings.threads}: this device has {cores} cores (0 for the runtime's default)")
    if settings.repeats > MAX_REPEATS or settings.warmup > MAX_WARMUP:
        raise PoseNASError(f"repeats {settings.repeats}, warmup {settings.warmup}: this server takes at most "
                           f"{MAX_REPEATS} and {MAX_WARMUP}")
    if settings.provider not in providers:
        raise PoseNASError(f"provider {settings.provider[:60]!r} is not available on this device: {providers}")
    return settings


def declared_resolution(model: bytes) -> int:
    """The side R of the model's one image input of fixed shape (1, 3, R, R), read from the graph
    before any tensor is made for it."""
    import onnx

    try:
        graph = onnx.load_model_from_string(model).graph
    except Exception:  # noqa: BLE001 - protobuf's errors vary by version
        raise PoseNASError("the body is not an ONNX model") from None
    weights = {w.name for w in graph.initializer}
    shapes = [[d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
              for i in graph.input if i.name not in weights]
    if len(shapes) != 1 or len(shapes[0]) != 4 or shapes[0][:2] != [1, 3] or shapes[0][2] != shapes[0][3] \
            or not RESOLUTIONS[0] <= (shapes[0][2] or 0) <= RESOLUTIONS[1]:
        raise PoseNASError(f"the model must take one image of fixed shape (1, 3, R, R) with R from {RESOLUTIONS[0]} "
                           f"to {RESOLUTIONS[1]}, got inputs {shapes}")
    return shapes[0][2]


class Handler(BaseHTTPRequestHandler):
    server: LatencyServer

    def _reply(self, code: int, payload, headers: dict | None = None) -> None:
        body = (json.dumps(payload) if code == 200 else str(payload)).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json" if code == 200 else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _refused(self, code: int, message: str, **headers) -> None:
        """A reply after which the connection closes (whatever of the body is still unread)."""
        self.close_connection = True
        self._reply(code, message, headers)

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None or hmac.compare_digest(self.headers.get("Authorization", "").encode(),
                                                f"Bearer {token}".encode()):
            return True
        self._refused(401, "unauthorized: send the server's token as Authorization: Bearer TOKEN "
                           "(POSENAS_LATENCY_TOKEN or --token-file)", **{"WWW-Authenticate": "Bearer"})
        return False

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if not self._authorized():
            return
        if urlparse(self.path).path == "/fingerprint":
            self._reply(200, self.server.fingerprint)
        else:
            self._refused(404, "unknown path; use GET /fingerprint or POST /measure")

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorized():
            return
        url = urlparse(self.path)
        if url.path != "/measure":
            self._refused(404, "unknown path; use POST /measure")
            return
        try:
            length = self._length()
        except PoseNASError as e:
            self._refused(400, f"bad request: {e}")
            return
        model = None
        try:
            request = self._checked_request({k: v[0] for k, v in parse_qs(url.query).items()})
            model = self._body(length)
            declared = declared_resolution(model)
            if declared != request["resolution"]:
                raise PoseNASError(f"resolution {request['resolution']}: the model's input is {declared} pixels")
        except PoseNASError as e:
            if model is None:  # read what the client sends, so that it reads the answer rather than a reset
                self._drain(length)
            self._refused(400, f"bad request: {e}")
            return
        except TimeoutError:
            self._refused(408, f"the request body did not arrive within {BODY_SECONDS} s")
            return
        try:
            with self.server.measuring:
                settings = request["settings"]
                figures = runtime_of(settings).measure_model(model, **request, watch=self.server.watch(settings))
        except Exception as e:  # noqa: BLE001 - onnxruntime rejects the model
            self._refused(400, f"model not runnable: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            return
        self._reply(200, figures)

    def _length(self) -> int:
        length = self.headers.get("Content-Length", "")
        if not (length.isascii() and length.isdigit()) or not 0 < int(length) <= MAX_MODEL_BYTES:
            raise PoseNASError(f"the body must be an ONNX model of 1 byte to {MAX_MODEL_BYTES} bytes "
                               f"(Content-Length), got {length[:20]!r}")
        return int(length)

    def _checked_request(self, q: dict) -> dict:
        """Every parameter of a measurement, checked before the body is read."""
        if "resolution" not in q:
            raise PoseNASError("resolution missing from the query")
        resolution = integer(q["resolution"], "resolution")
        if not RESOLUTIONS[0] <= resolution <= RESOLUTIONS[1]:
            raise PoseNASError(f"resolution {resolution}: give {RESOLUTIONS[0]} to {RESOLUTIONS[1]}")
        keypoints = integer(q.get("keypoints", "17"), "keypoints")
        spec_of(keypoints)
        settings = measurement_settings(q, self.server.fingerprint["cores"], self.server.fingerprint["providers"])
        return {"resolution": resolution, "num_keypoints": keypoints, "settings": settings,
                "multi_resolution": flag(q.get("multi_resolution", "0"), "multi_resolution")}

    def _body(self, length: int, keep: bool = True) -> bytes:
        """``length`` bytes of body (or read and dropped), each read within the socket timeout and
        all within ``BODY_SECONDS`` (TimeoutError otherwise)."""
        deadline, chunks, left = time.monotonic() + BODY_SECONDS, [], length
        while left:
            chunk = self.rfile.read1(min(left, 1 << 20))
            if not chunk:
                raise PoseNASError(f"the body ended after {length - left} of {length} bytes")
            if time.monotonic() > deadline:
                raise TimeoutError
            if keep:
                chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _drain(self, length: int) -> None:
        try:
            self._body(length, keep=False)
        except (PoseNASError, TimeoutError, OSError):
            pass  # the reply says what was wrong with the request; the connection closes after it

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        print(f"latency-server: {self.address_string()} {format % args}", flush=True)


class LatencyServer(ThreadingHTTPServer):
    """A thread per connection, up to ``MAX_CONNECTIONS`` (more are answered 503 at once); one
    measurement at a time."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, host: str, port: int, token: str | None, timeout: float):
        check_exposure(host, token)
        Handler.timeout = timeout  # the socket timeout of every read and write
        super().__init__((host, port), Handler)
        self.token, self.fingerprint = token, {**device_fingerprint(), **installed_versions()}
        self.measuring, self.slots = threading.Lock(), threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.watches: dict[str, Stopwatch] = {}  # a stopwatch per runtime settings, each calibrated once

    def watch(self, settings: RuntimeSettings) -> Stopwatch:
        if settings.key() not in self.watches:
            if len(self.watches) >= MAX_SETTINGS:
                self.watches.clear()
            self.watches[settings.key()] = Stopwatch(settings, fingerprint_key(self.fingerprint))
        return self.watches[settings.key()]

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def serve(port: int, host: str = "127.0.0.1", token: str | None = None, timeout: float = 10) -> None:
    try:
        server = LatencyServer(host, port, token, timeout)
    except OSError as e:
        raise PoseNASError(f"--host {host} --port {port}: cannot listen ({e.strerror or e})") from None
    print(f"latency-server: measuring on {server.fingerprint['cpu']} at http://{host}:{server.server_port} "
          f"({'token required' if token else 'loopback, no token'}; pid {os.getpid()})", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
