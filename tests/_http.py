"""A tiny HTTP server on 127.0.0.1 for testing downloads (tests never reach the internet)."""

from __future__ import annotations

import http.server
import threading


class LoopbackServer:
    """A tiny HTTP server on 127.0.0.1 serving files from a dict; can fail the first requests."""

    def __init__(self, files: dict, fail_first: int = 0):
        self.files, self.fail_left, self.hits = files, fail_first, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                name = self.path.lstrip("/")
                if outer.fail_left > 0:
                    outer.fail_left -= 1
                    self.send_response(503); self.end_headers(); return
                if name not in outer.files:
                    self.send_response(404); self.end_headers(); return
                body = outer.files[name]
                self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
