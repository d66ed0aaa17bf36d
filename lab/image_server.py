#!/usr/bin/env python3
"""The lab's simplestreams image server: static files over HTTPS, sent at a bounded rate.

Started in the background by lab/image_server.sh. Serves ROOT (streams/v1/index.json,
streams/v1/images.json and the image files they name) on ADDRESS with the lab CA's server
certificate. Each response is sent at no more than --rate bytes per second, so a pull of the
lab's largest image lasts a few seconds, as over a real network, and LXD's download progress can
be seen.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import ssl
import sys
import time


class Handler(http.server.SimpleHTTPRequestHandler):
    """GET and HEAD of files under the served directory; no listings."""

    rate = 0

    def list_directory(self, path):  # noqa: ARG002 - the index is streams/v1/index.json
        self.send_error(404, "no listings")
        return None

    def copyfile(self, source, outputfile):
        block = 256 * 1024
        started = time.monotonic()
        sent = 0
        while True:
            data = source.read(block)
            if not data:
                return
            outputfile.write(data)
            sent += len(data)
            if self.rate:
                ahead = sent / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        # The client's User-Agent names the daemon (LXD 5.0.2, Incus 6.0.4): tests count their own pulls.
        agent = self.headers.get("User-Agent", "-") if getattr(self, "headers", None) else "-"
        sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {self.address_string()} {format % args} "
                         f"[{agent}]\n")
        sys.stderr.flush()


class Server(http.server.ThreadingHTTPServer):
    """Threads per request; a failed handshake is one log line, not a traceback."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {client_address[0]} error: {error}\n")
        sys.stderr.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True)
    parser.add_argument("--address", required=True, help="HOST:PORT")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--rate", type=int, default=0, help="bytes per second per response (0: unbounded)")
    args = parser.parse_args()
    host, port = args.address.rsplit(":", 1)
    Handler.rate = args.rate
    server = Server((host, int(port)), functools.partial(Handler, directory=args.root))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    # The handshake happens in the request's own thread: a stalled client blocks no other.
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    server.serve_forever()


if __name__ == "__main__":
    main()
