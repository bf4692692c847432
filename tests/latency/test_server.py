"""The latency server over loopback, as real processes: it measures, it answers only those who
hold its token, it bounds every request before any work, a slow client holds nobody; and the
client believes no reply that is not a measurement."""
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from nas.errors import PoseNASError
from nas.latency.meter import LatencyCache, LatencyMeter, RemoteBackend, device_fingerprint
from nas.latency.runtimes import export_for, installed_versions
from nas.latency.server import MAX_CONNECTIONS
from nas.latency.settings import RuntimeSettings
from nas.latency.token import TOKEN_ENV
from search_spaces import SearchSpace

POSENAS = str(Path(sys.executable).with_name("posenas"))
FAST = dict(warmup=1, repeats=5)
TOKEN = "s3cret-token-for-tests-0123456789"


@contextmanager
def latency_server(*flags, token: str | None = None):
    """A ``posenas latency-server`` process on a free loopback port: yields its URL."""
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    if token:
        env[TOKEN_ENV] = token
    server = subprocess.Popen([POSENAS, "latency-server", "--port", "0", *flags], stdout=subprocess.PIPE, text=True,
                              env=env)
    try:
        yield re.search(r"http://[\d.:]+", server.stdout.readline()).group(0)
    finally:
        server.terminate()
        server.wait()


def raw_request(url: str, head: str, body: bytes = b"") -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=120)
    conn.sendall(head.encode() + b"\r\n\r\n" + body)
    return conn


def test_server_measures_over_loopback_and_bounds_each_request():
    with latency_server() as url:
        remote = RemoteBackend(url, RuntimeSettings(**FAST, latency_of="network"))
        assert remote.fingerprint == json.loads(json.dumps({**device_fingerprint(), **installed_versions()}))
        if importlib.util.find_spec("openvino"):
            import openvino
            assert remote.fingerprint["openvino"] == openvino.__version__  # an OpenVINO target's figures key by it
        figures = remote.measure(SearchSpace.load("tiny").min())
        assert 0 < figures["median_ms"] <= figures["p90_ms"] and figures["runs"] == 5 and figures["slowdown"] > 0
        assert "grouping_ms" not in figures
        total = RemoteBackend(url, RuntimeSettings(**FAST, people=3)).measure(SearchSpace.load("tiny").max())
        assert total["people"] == 3 and total["grouping_ms"] > 0 and total["network_ms"] >= 0
        int8 = RemoteBackend(url, RuntimeSettings(**FAST, latency_of="network", precision="int8"))
        assert int8.measure(SearchSpace.load("tiny").min())["runs"] == 5  # quantized on the device, then timed
        model = export_for(SearchSpace.load("tiny").min(), 17, "network")  # 64 px
        cores = remote.fingerprint["cores"]
        for query, message in (({"resolution": 64, "people": 99}, "--people 99"),
                               ({"resolution": 64, "repeats": 10**9}, "repeats 3 to 10000"),
                               ({"resolution": 64, "repeats": 1001}, "repeats 1001, warmup 10: this server takes"),
                               ({"resolution": 64, "warmup": 101}, "warmup 101: this server takes at most"),
                               ({"resolution": 64, "threads": 10000},
                                "threads 0 to 256 are needed, got 50, 10 and 10000"),
                               ({"resolution": 64, "threads": cores + 1}, f"this device has {cores} cores"),
                               ({"resolution": 64, "provider": "CUDAExecutionProvider"},
                                "provider 'CUDAExecutionProvider' is not available"),
                               ({"resolution": 64, "reference": "maybe"}, "reference must be true or false"),
                               ({"resolution": 64, "backend": "torch", "latency_of": "network"},
                                "backend torch: the server measures exported models in a deployment runtime"),
                               ({"resolution": 64, "backend": "tflite"}, "target runtime 'tflite' unknown"),
                               ({"resolution": 64, "precision": "int4"}, "precision 'int4' unknown"),
                               ({"resolution": 64, "keypoints": 5}, "--keypoints 5"),
                               ({"resolution": "64px"}, "resolution must be an integer"),
                               ({"resolution": 16000}, "resolution 16000: give 32 to 2048"),
                               ({"resolution": 128}, "resolution 128: the model's input is 64 pixels")):
            with pytest.raises(PoseNASError, match=message):
                remote._request("/measure", model, query)
        with pytest.raises(PoseNASError, match="400 bad request: the body is not an ONNX model"):
            remote._request("/measure", b"not an onnx model", {"resolution": 64})
        conn = raw_request(url, "POST /measure?resolution=64 HTTP/1.1\r\nContent-Length: 10000000000")
        assert b"400" in conn.recv(4096).split(b"\r\n")[0]  # refused from the header, the body never read
        assert RemoteBackend(url, RuntimeSettings(**FAST, latency_of="network")).measure(
            SearchSpace.load("tiny").min())["runs"] == 5, "the server still measures after all that"
    with pytest.raises(PoseNASError, match="unreachable"):
        RemoteBackend(url)


@pytest.mark.slow
def test_a_remote_measurement_needs_a_deployment_runtime():
    with pytest.raises(PoseNASError, match="torch eager .* does not run them"):
        RemoteBackend("http://127.0.0.1:9", RuntimeSettings(backend="torch", latency_of="network"))


def test_a_token_server_answers_only_its_token_holders(tmp_path):
    with latency_server(token=TOKEN) as url:
        for token in (None, TOKEN[:-1] + "x"):
            with pytest.raises(PoseNASError, match="401 unauthorized"):
                RemoteBackend(url, token=token)
        conn = raw_request(url, "POST /measure?resolution=64 HTTP/1.1\r\nContent-Length: 5")
        assert b"401" in conn.recv(4096).split(b"\r\n")[0]
        remote = RemoteBackend(url, RuntimeSettings(**FAST, latency_of="network"), token=TOKEN)
        assert remote.measure(SearchSpace.load("tiny").min())["median_ms"] > 0
        (tmp_path / "token").write_text(TOKEN + "\n")
        out = tmp_path / "m.json"
        measured = subprocess.run([POSENAS, "latency", "measure", "--space", "tiny", "--preset", "min", "--url", url,
                                   "--token-file", str(tmp_path / "token"), "--latency-of", "network", "--repeats",
                                   "5", "--warmup", "1", "--no-cache", "--json"], capture_output=True, text=True,
                                  env={k: v for k, v in os.environ.items() if k != TOKEN_ENV})
        assert measured.returncode == 0, measured.stderr
        out.write_text(measured.stdout.splitlines()[-1])
        assert json.loads(out.read_text())["median_ms"] > 0


def test_a_server_on_a_network_without_a_token_does_not_start():
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    refused = subprocess.run([POSENAS, "latency-server", "--port", "0", "--host", "0.0.0.0"], capture_output=True,
                             text=True, env=env, timeout=120)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "without a token" in refused.stderr
    short = subprocess.run([POSENAS, "latency-server", "--port", "0"], capture_output=True, text=True,
                           env={**env, TOKEN_ENV: "short"}, timeout=120)
    assert short.returncode == 2 and "at least 16 characters" in short.stderr


@pytest.mark.slow
def test_a_slow_client_holds_nobody_and_is_cut_off():
    with latency_server("--timeout", "300") as url:  # a silent client is waited for 5 minutes
        slow = raw_request(url, "POST /measure?resolution=64 HTTP/1.1\r\nContent-Length: 100000", b"0123456789")
        assert RemoteBackend(url, timeout=120).fingerprint["cores"] > 0
        slow.setblocking(False)
        with pytest.raises(BlockingIOError):  # no answer, no close: the server still waits on it
            slow.recv(1)
        idle = [socket.create_connection(slow.getpeername(), timeout=120) for _ in range(MAX_CONNECTIONS - 1)]
        extra = socket.create_connection(slow.getpeername(), timeout=120)
        assert extra.recv(4096).startswith(b"HTTP/1.0 503"), "one connection over the cap is turned away at once"
        for conn in [*idle, slow]:
            conn.close()
        for _ in range(600):  # the slots free as the server notices the closed connections
            try:
                assert RemoteBackend(url, timeout=120).fingerprint["cores"] > 0
                break
            except PoseNASError:
                time.sleep(0.2)
        else:
            pytest.fail("the server never took a connection again")
    with latency_server("--timeout", "0.5") as url:
        slow = raw_request(url, "POST /measure?resolution=64 HTTP/1.1\r\nContent-Length: 100000", b"0123456789")
        assert b"408" in slow.recv(4096).split(b"\r\n")[0], "a client silent past --timeout is answered and cut off"


class Hostile(BaseHTTPRequestHandler):
    """A server that answers with whatever ``replies`` holds for the path."""

    replies: dict[str, bytes] = {}

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = self.replies[self.path.split("?")[0]]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.mark.slow
def test_the_client_believes_no_reply_that_is_not_a_measurement(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        for fingerprint in (b"{}", b"[1, 2]", b"<html>", json.dumps({"cpu": "x", "cores": 0}).encode()):
            Hostile.replies = {"/fingerprint": fingerprint}
            with pytest.raises(PoseNASError, match="not JSON|lacks the device's cpu and cores"):
                RemoteBackend(url)
        good = {"median_ms": 2.0, "p90_ms": 2.5, "network_ms": 1.5, "postprocess_ms": 0.5}
        cache = LatencyCache(tmp_path / "lat.sqlite")
        for reply, message in ((b"not json", "the reply to /measure is not JSON"),
                               (b"[2.0]", "not a JSON object"),
                               (json.dumps({**good, "median_ms": -1}).encode(), "median_ms -1 is not a latency"),
                               (json.dumps({**good, "median_ms": 0}).encode(), "median_ms 0 is not a latency"),
                               (json.dumps({**good, "p90_ms": float("nan")}).encode(), "p90_ms nan"),
                               (json.dumps({**good, "network_ms": "fast"}).encode(), "network_ms 'fast'"),
                               (json.dumps({k: v for k, v in good.items() if k != "postprocess_ms"}).encode(),
                                "postprocess_ms None")):
            Hostile.replies = {"/fingerprint": json.dumps(device_fingerprint()).encode(), "/measure": reply}
            meter = LatencyMeter(RemoteBackend(url, RuntimeSettings(**FAST)), cache)
            with pytest.raises(PoseNASError, match=message):
                meter.measure(SearchSpace.load("tiny").min())
        assert len(cache) == 0, "nothing a server sent that is not a measurement is cached"
        Hostile.replies["/measure"] = json.dumps(good).encode()
        assert meter.measure(SearchSpace.load("tiny").min())["median_ms"] == 2.0 and len(cache) == 1
    finally:
        server.shutdown()
        server.server_close()
