"""roapi (PyPI `roapi`): a static DataFusion server with Flight SQL, the server a user would
stand up to put SQL over files. Started in read-write mode so that tables can be registered
after start; queried over ADBC, as Polarway's Flight SQL is.

    peer = Roapi(binary, {"t": "/abs/file.parquet"})   # it refuses to start with no table
    peer.register("u", "/abs/other.parquet")
    table = peer.query("SELECT ...")                     # a pyarrow.Table in the client
    peer.stop()
"""

import json
import subprocess
import time
import urllib.request

import adbc_driver_flightsql.dbapi as flight_sql
from fleet import free_port  # tests/python, on the path benches/e2e.py sets


class Roapi:
    def __init__(self, binary, tables):
        self.http, self.flight = free_port(), free_port()
        args = [binary, "-d", "-a", f"127.0.0.1:{self.http}", "--addr-flight-sql", f"127.0.0.1:{self.flight}"]
        for name, path in tables.items():
            args += ["-t", f"{name}={path}"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.http}/api/schema", timeout=5).read()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("roapi did not start")
                time.sleep(0.1)
        self.conn = flight_sql.connect(f"grpc://127.0.0.1:{self.flight}", autocommit=True)

    def register(self, name, path):
        body = json.dumps([{"tableName": name, "uri": path}]).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}/api/table", data=body,
                                     headers={"content-type": "application/json"}, method="POST")
        urllib.request.urlopen(req, timeout=600).read()

    def query(self, sql):
        with self.conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table()

    def stop(self):
        self.conn.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)
