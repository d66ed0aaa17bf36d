"""A test backend run inside a lab container: says who it is, takes uploads, accepts websocket upgrades.

    python3 backend_server.py NAME PORT
"""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = sys.argv[1]


class Handler(BaseHTTPRequestHandler):
    def _reply(self, code: int, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            return
        forwarded = self.headers.get("X-Forwarded-For", "")
        self._reply(200, f"backend={NAME} path={self.path} xff={forwarded}\n")

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        self._reply(200, f"backend={NAME} received={length}\n")

    def log_message(self, *args) -> None:
        return


ThreadingHTTPServer(("0.0.0.0", int(sys.argv[2])), Handler).serve_forever()
