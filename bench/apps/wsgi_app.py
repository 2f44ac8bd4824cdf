# The WSGI app for uWSGI (configurations 6 and 7): the same routes and bodies as
# bench/apps/routes.ts, by hand.
import time

HELLO = b"Hello, World!"
K64 = b"x" * 65536
CHUNK = b"x" * 65536
SSE_INTERVAL = 0.010


def _sse():
    while True:
        time.sleep(SSE_INTERVAL)
        yield b"data: %.3f\n\n" % (time.monotonic() * 1000.0)  # same clock as the Node client


def _download(total):
    left = total
    while left > 0:
        n = min(left, len(CHUNK))
        left -= n
        yield CHUNK if n == len(CHUNK) else CHUNK[:n]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/hello":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
        return [HELLO]
    if path == "/64k":
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", "65536")])
        return [K64]
    if path == "/echo":
        left = int(environ.get("CONTENT_LENGTH") or 0)
        stream = environ["wsgi.input"]
        total = 0
        while left > 0:
            chunk = stream.read(min(left, 262144))
            if not chunk:
                break
            total += len(chunk)
            left -= len(chunk)
        body = str(total).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/sse":
        start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")])
        return _sse()
    if path == "/download":
        total = 0
        for part in environ.get("QUERY_STRING", "").split("&"):
            if part.startswith("bytes="):
                total = int(part[6:] or 0)
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(total))])
        return _download(total)
    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]
