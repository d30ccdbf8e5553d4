"""What a user would write instead of Polarway in an afternoon: a pyarrow Flight server that keeps
uploaded tables in memory and runs Polars on them.

    python pyarrow_peer.py 127.0.0.1 0     # prints "listening <port>"

DoPut stores a table and answers its handle; DoGet streams a handle's table; the `filter` action
runs `pl.col(column) > value` (or `==`) and stores the result under a new handle; ListActions
names it.
"""

import json
import sys
import threading
import uuid

import polars as pl
import pyarrow.flight as flight


class Peer(flight.FlightServerBase):
    def __init__(self, location):
        super().__init__(location)
        self.tables = {}
        self.lock = threading.Lock()

    def _store(self, table):
        handle = uuid.uuid4().hex
        with self.lock:
            self.tables[handle] = table
        return handle

    def _get(self, handle):
        with self.lock:
            table = self.tables.get(handle)
        if table is None:
            raise flight.FlightServerError(f"unknown handle {handle}")
        return table

    def do_put(self, context, descriptor, reader, writer):
        handle = self._store(reader.read_all())
        writer.write(json.dumps({"handle": handle}).encode())

    def do_get(self, context, ticket):
        return flight.RecordBatchStream(self._get(ticket.ticket.decode()))

    def list_actions(self, context):
        return [("filter", "filter a table: {input, column, gt | eq} -> {handle, num_rows}")]

    def do_action(self, context, action):
        if action.type != "filter":
            raise flight.FlightServerError(f"unknown action {action.type}")
        body = json.loads(action.body.to_pybytes())
        frame = pl.from_arrow(self._get(body["input"]))
        column = pl.col(body["column"])
        predicate = column > body["gt"] if "gt" in body else column == body["eq"]
        result = frame.filter(predicate).to_arrow()
        yield json.dumps({"handle": self._store(result), "num_rows": result.num_rows}).encode()


if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    server = Peer(f"grpc://{host}:{port}")
    print(f"listening {server.port}", flush=True)
    server.serve()
