"""Health probe for the flask service: one uwsgi request to the uWSGI socket
(the packet NGINX's uwsgi_pass sends); exit 0 on a 2xx/3xx answer."""
import socket
import struct
import sys

address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:3031"
path = sys.argv[2] if len(sys.argv) > 2 else "/"
host, _, port = address.rpartition(":")

pairs = {
    "REQUEST_METHOD": "GET", "REQUEST_URI": path, "PATH_INFO": path, "QUERY_STRING": "",
    "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "localhost", "SERVER_PORT": "80",
    "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "localhost", "HTTP_USER_AGENT": "gatewire-healthcheck",
}
block = b"".join(
    struct.pack("<H", len(k)) + k.encode("latin-1") + struct.pack("<H", len(v)) + v.encode("latin-1")
    for k, v in pairs.items()
)
try:
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(struct.pack("<BHB", 0, len(block), 0) + block)
        line = sock.makefile("rb").readline().decode("latin-1")
    status = int(line.split()[1])
except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
    print(f"unhealthy: {exc}", file=sys.stderr)
    sys.exit(1)
if not 200 <= status < 400:
    print(f"unhealthy: {line.strip()}", file=sys.stderr)
    sys.exit(1)
