#!/usr/bin/python3
"""ghost-app: the reference deployment's blog application.

It answers every GET with the title of post 1, read from MariaDB on the db host over the mesh,
and says which host served it. Configuration comes from the environment (/etc/default/ghost-app):
LISTEN, PORT, DB_HOST, DB_PORT, DB_USER, DB_PASSWORD.
"""
import http.server
import os
import socket

import pymysql

LISTEN = os.environ.get("LISTEN", "127.0.0.1")
PORT = int(os.environ.get("PORT", "2368"))
HOST = socket.gethostname()


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "ghost-app/1"

    def do_GET(self):
        try:
            conn = pymysql.connect(
                host=os.environ["DB_HOST"],
                port=int(os.environ.get("DB_PORT", "3306")),
                user=os.environ.get("DB_USER", "ghost"),
                password=os.environ["DB_PASSWORD"],
                database="ghost",
                connect_timeout=5,
            )
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT title FROM posts WHERE id = 1")
                    row = cur.fetchone()
            finally:
                conn.close()
            status = 200 if row else 404
            body = "%s\nserved by ghost-app on %s from the database at %s\n" % (
                row[0] if row else "no post", HOST, os.environ["DB_HOST"])
        except Exception as e:  # the database is away: say so, keep serving
            status, body = 503, "ghost-app on %s: database unavailable: %s\n" % (HOST, e)
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    http.server.ThreadingHTTPServer((LISTEN, PORT), Handler).serve_forever()
