"""The Flask half of the compose demo: a WSGI app under uWSGI that the gatewire
proxy reaches with the classic uwsgi protocol (like NGINX's uwsgi_pass), next to
the Node appservers it reaches with gatewire's native protocol."""
import os
import socket

from flask import Flask, jsonify, request, url_for

app = Flask(__name__)


@app.get("/")
def index():
    return "hello from flask under uWSGI\n", 200, {"Content-Type": "text/plain; charset=utf-8"}


@app.get("/whoami")
def whoami():
    # HOSTNAME is the container id under Docker; it tells replicas apart.
    return jsonify(
        server="flask",
        hostname=os.environ.get("HOSTNAME") or socket.gethostname(),
        pid=os.getpid(),
        path=request.path,
        script_name=request.script_root,
        forwarded_for=request.headers.get("X-Forwarded-For"),
    )


@app.get("/links")
def links():
    # Mounted under a prefix (/flask/ in gatewire.yaml, strip_prefix), the app
    # learns it from SCRIPT_NAME, as under NGINX's `uwsgi_param SCRIPT_NAME`:
    # url_for then builds links that lead back through the proxy.
    return jsonify(
        script_name=request.script_root,
        whoami=url_for("whoami"),
        index=url_for("index"),
    )


@app.post("/echo")
def echo():
    body = request.get_data()
    return body, 200, {"Content-Type": request.content_type or "application/octet-stream"}
