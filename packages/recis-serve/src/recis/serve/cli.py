"""`recis-predict` scores a Parquet file with a bundle; `recis-serve` answers HTTP JSON requests.

recis-predict bundles/demo test.parquet scores.parquet --keep user_id --keep item_id
recis-serve bundles/demo --port 8080

The server (the standard library's threaded HTTP server) has two routes:
- `GET /health`: 200 {"status": "ok", "bundle": ..., "heads": [...], "requests": n, "unknown_ids": n}.
- `POST /predict` with {"instances": [{column: value, ...}, ...]}: 200 {"predictions": {head: [...]}}.
A request the model cannot score (bad JSON, a missing or unknown column, a wrong type) gets a 400
with {"error": message}; nothing a client sends stops the server.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from recis.core import version_line

from .bundle import BundleError
from .predictor import Predictor, RequestError

MAX_BODY = 64 << 20  # bytes a request may carry


def predict_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recis-predict", description="Score a Parquet file with a serving bundle.")
    p.add_argument("--version", action="version", version="%(prog)s: " + version_line("recis-serve"))
    p.add_argument("bundle", help="the bundle directory (recis-export writes it)")
    p.add_argument("source", help="the Parquet file to score")
    p.add_argument("target", help="the Parquet file to write: the kept columns, then one column per head")
    p.add_argument("--keep", action="append", default=[], metavar="COLUMN", help="copy this column to the output")
    p.add_argument("--batch-rows", type=int, default=4096, help="rows scored per call")
    args = p.parse_args(argv)
    try:
        start = time.perf_counter()
        predictor = Predictor(args.bundle)
        rows = predictor.predict_parquet(args.source, args.target, args.keep, args.batch_rows)
    except (BundleError, RequestError, OSError) as e:
        print(f"recis-predict: {e}", file=sys.stderr)
        return 2
    took = time.perf_counter() - start
    stats = predictor.stats()
    print(f"scored {rows} rows in {took:.1f} s into {args.target}; "
          f"{stats['unknown']} of {stats['lookups']} IDs were unknown to the tables (read as zeros)")  # fmt: skip
    return 0


class Handler(BaseHTTPRequestHandler):
    predictor: Predictor
    lock: threading.Lock
    requests = 0
    quiet = False

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path != "/health":
            self._send(404, {"error": f"no route {self.path} (GET /health, POST /predict)"})
            return
        p = type(self).predictor
        self._send(200, {"status": "ok", "bundle": str(p.path), "heads": list(p.heads),
                         "requests": type(self).requests, "unknown_ids": p.stats()["unknown"]})  # fmt: skip

    def do_POST(self) -> None:
        if self.path != "/predict":
            self._send(404, {"error": f"no route {self.path} (GET /health, POST /predict)"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            if not 0 < length <= MAX_BODY:
                raise RequestError(f"the body must hold 1 to {MAX_BODY} bytes of JSON, got {length}")
            body = json.loads(self.rfile.read(length))
            rows = body.get("instances") if isinstance(body, dict) else None
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise RequestError('expected {"instances": [{column: value, ...}, ...]}')
            with type(self).lock:  # the tables count unknown IDs; one batch at a time keeps the counts exact
                scores = type(self).predictor.predict_rows(rows)
                type(self).requests += 1
        except (RequestError, json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
            self._send(400, {"error": str(e)})
            return
        except Exception as e:  # a fault of the server's own: reported, and the server keeps serving
            self._send(500, {"error": f"{type(e).__name__}: {e}"})
            return
        self._send(200, {"predictions": {head: s.tolist() for head, s in scores.items()}})

    def log_message(self, format: str, *args: Any) -> None:
        if not type(self).quiet:
            super().log_message(format, *args)


def make_server(
    predictor: Predictor, host: str = "127.0.0.1", port: int = 8080, quiet: bool = False
) -> ThreadingHTTPServer:
    """An HTTP server for `predictor` (not started: call `serve_forever()`); port 0 picks a free one."""
    handler = type("BundleHandler", (Handler,), {"predictor": predictor, "lock": threading.Lock(), "quiet": quiet})
    return ThreadingHTTPServer((host, port), handler)


def serve_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recis-serve", description="Serve a bundle's predictions over HTTP (JSON).")
    p.add_argument("--version", action="version", version="%(prog)s: " + version_line("recis-serve"))
    p.add_argument("bundle", help="the bundle directory (recis-export writes it)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--quiet", action="store_true", help="do not log each request")
    args = p.parse_args(argv)
    try:
        server = make_server(Predictor(args.bundle), args.host, args.port, args.quiet)
    except (BundleError, OSError) as e:
        print(f"recis-serve: {e}", file=sys.stderr)
        return 2
    port = server.server_address[1]
    print(f"serving {args.bundle} on http://{args.host}:{port} (POST /predict, GET /health)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
