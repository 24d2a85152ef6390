#!/usr/bin/env python3
"""An HTTP/1.1 test backend for shardgate's HTTP proxy tests (stdlib only).

Usage: http_backend.py PORT [TAG]. Prints "listening" once ready. Keep-alive by default.
Every answer carries `X-Backend: TAG` and `X-Backend-Connection: N` (N counts accepted
connections, so a client can tell whether two requests shared one backend connection).

Paths:
  /echo...        JSON of the request: method, path, headers (lower-cased), body length
                  and sha256 (bodies of any framing are read by the server).
  /chunked        a chunked response ("part-1 part-2 part-3").
  /close          a close-delimited response (no Content-Length), then close.
  /status/NNN     an empty answer with status NNN.
  /slow/SECONDS   waits, then answers.
  /garbage        a non-HTTP answer.
  /big/N          N bytes of a repeating pattern with Content-Length.
  /ws             101 Switching Protocols (needs Upgrade: websocket), then echoes bytes.
"""
import hashlib
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TAG = sys.argv[2] if len(sys.argv) > 2 else "backend"
COUNTER = {"n": 0}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        with LOCK:
            COUNTER["n"] += 1
            self.connection_id = COUNTER["n"]

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if te.lower() == "chunked":
            body = b""
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length", "0") or "0")
        return self.rfile.read(length) if length else b""

    def common(self, status, body=b"", extra=None, length=True):
        self.send_response(status)
        self.send_header("X-Backend", TAG)
        self.send_header("X-Backend-Connection", str(self.connection_id))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        body = self.read_body()
        path = self.path
        if path.startswith("/chunked"):
            self.send_response(200)
            self.send_header("X-Backend", TAG)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"part-1 ", b"part-2 ", b"part-3"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        if path.startswith("/close"):
            self.send_response(200)
            self.send_header("X-Backend", TAG)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"closed-body-" * 1000)
            self.close_connection = True
            return
        if path.startswith("/status/"):
            self.common(int(path.split("/")[2]))
            return
        if path.startswith("/slow/"):
            time.sleep(float(path.split("/")[2]))
            self.common(200, b"slow")
            return
        if path.startswith("/garbage"):
            self.wfile.write(b"THIS IS NOT HTTP\r\n\r\n")
            self.close_connection = True
            return
        if path.startswith("/big/"):
            n = int(path.split("/")[2])
            pattern = b"0123456789abcdef"
            data = (pattern * (n // 16 + 1))[:n]
            self.common(200, data)
            return
        if path.startswith("/ws"):
            if self.headers.get("Upgrade", "").lower() != "websocket":
                self.common(400, b"no upgrade")
                return
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            while True:
                data = self.connection.recv(65536)
                if not data:
                    break
                self.connection.sendall(data)
            self.close_connection = True
            return
        info = {
            "method": self.command,
            "path": path,
            "version": self.request_version,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "header_list": [[k.lower(), v] for k, v in self.headers.items()],
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "tag": TAG,
        }
        self.common(200, json.dumps(info).encode(), {"Content-Type": "application/json"})

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
