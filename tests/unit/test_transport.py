"""The API session against a real HTTP server on a unix socket: kept connections, a server that
closes them between requests, a streamed answer cut short, and a server that is gone."""

from __future__ import annotations

import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.lxd_api import LxdApi
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import Remote
from ansible_collections.mage.lxd.plugins.plugin_utils.transport import ApiSession, TransportError


class LxdLikeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as LXD

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.startswith("/1.0/big"):
            body = b"x" * (4 * 1024 * 1024)
        else:
            body = json.dumps({"type": "sync", "metadata": {"path": self.path, "auth": "trusted"}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except BrokenPipeError:
            return
        if self.server.close_after_each:
            self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers["Content-Length"])
        received = self.rfile.read(length)
        body = json.dumps({"type": "sync", "metadata": {"received": len(received)}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args) -> None:
        return None


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def server(tmp_path):
    path = str(tmp_path / "lxd.socket")
    httpd = UnixServer(path, LxdLikeHandler)
    httpd.connections = 0
    httpd.lock = threading.Lock()
    httpd.close_after_each = False
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, path
    httpd.shutdown()
    httpd.server_close()


def test_requests_share_one_kept_connection(server):
    httpd, path = server
    session = ApiSession(Remote(url=f"unix:{path}"), path)
    for name in ("a", "b", "c"):
        assert session.request("get", f"http://unix.socket/1.0/{name}", {"project": "p q"}).json()["metadata"] == {
            "path": f"/1.0/{name}?project=p+q", "auth": "trusted"}
    assert httpd.connections == 1


def test_a_connection_the_server_closed_between_requests_is_replaced(server):
    httpd, path = server
    httpd.close_after_each = True
    session = ApiSession(Remote(url=f"unix:{path}"), path)
    for _attempt in range(3):
        assert session.request("get", "http://unix.socket/1.0/x").status_code == 200
    assert httpd.connections == 3


def test_a_streamed_answer_closed_early_does_not_spoil_the_next_request(server, tmp_path):
    path = server[1]
    session = ApiSession(Remote(url=f"unix:{path}"), path)
    response = session.request("get", "http://unix.socket/1.0/big", stream=True)
    first = next(response.iter_content(1024))
    response.close()
    assert len(first) == 1024
    assert session.request("get", "http://unix.socket/1.0/after").json()["metadata"]["path"] == "/1.0/after"
    upload = tmp_path / "upload"
    upload.write_bytes(b"y" * 3_000_000)
    with open(upload, "rb") as source:
        answer = session.request("post", "http://unix.socket/1.0/files", data=source)
    assert answer.json()["metadata"] == {"received": 3_000_000}


def test_threads_each_get_their_own_connection(server):
    httpd, path = server
    api = LxdApi(Remote(url=f"unix:{path}"))
    results = []

    def ask() -> None:
        results.extend(api.get(f"n{i}")["path"] for i in range(20))

    threads = [threading.Thread(target=ask) for _thread in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 80
    assert httpd.connections == 5  # the handshake's, then one per thread


def test_a_server_that_is_gone_is_a_transport_error_and_named(server):
    httpd, path = server
    httpd.close_after_each = True  # no kept connection outlives the server
    api = LxdApi(Remote(url=f"unix:{path}"))
    httpd.shutdown()
    httpd.server_close()
    with pytest.raises(TransportError):
        api.session.request("get", "http://unix.socket/1.0/x", timeout=1)
    with pytest.raises(Exception, match=r"LXD remote 'local' \(unix:.*\): cannot connect .*Fix: is LXD running"):
        api.get("instances")
