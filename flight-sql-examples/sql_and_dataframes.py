"""SQL and DataFrame actions on one dataset, with nothing but pyarrow.flight.

Upload a table under a name, query it with Flight SQL (the command is a few protobuf bytes), then
continue from the SQL result's handle with DataFrame actions, name that result, and query it
with SQL again.

    pip install pyarrow
    python sql_and_dataframes.py grpc://127.0.0.1:50051
"""

import json
import sys

import pyarrow as pa
import pyarrow.flight as flight

uri = sys.argv[1] if len(sys.argv) > 1 else "grpc://127.0.0.1:50051"
client = flight.FlightClient(uri)


def field(number, payload):
    """A length-delimited protobuf field (lengths here stay under 2**14)."""
    length = len(payload)
    prefix = bytes([length]) if length < 128 else bytes([length & 0x7F | 0x80, length >> 7])
    return bytes([number << 3 | 2]) + prefix + payload


def sql(query):
    """Runs a Flight SQL statement; returns (handle, table)."""
    command = field(1, b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery")
    command += field(2, field(1, query.encode()))
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
    ticket = info.endpoints[0].ticket
    return ticket.ticket.decode(), client.do_get(ticket).read_all()


def act(op, body):
    [result] = client.do_action(flight.Action(op, json.dumps(body).encode()))
    return json.loads(result.body.to_pybytes())


# 1. Upload under a name: the table `example_trades`.
trades = pa.table({
    "sym": ["AAPL", "MSFT", "AAPL", "GOOG", "MSFT", "AAPL"],
    "qty": [10, 20, 30, 40, 50, 60],
})
writer, reader = client.do_put(flight.FlightDescriptor.for_path("example_trades"), trades.schema)
writer.write_table(trades)
writer.done_writing()
writer.close()

# 2. SQL over it; the result is a handle like any other.
handle, totals = sql("SELECT sym, SUM(qty) AS total FROM example_trades GROUP BY sym")
print("SQL result", handle, totals.num_rows, "rows")

# 3. DataFrame actions continue from the SQL result.
big = act("filter", {"input": handle, "predicate": "total >= 70"})
ranked = act("sort", {"input": big["handle"], "by": ["total"], "descending": [True]})

# 4. Name the DataFrame result and query it with SQL.
act("name", {"handle": ranked["handle"], "name": "example_big"})
_, table = sql("SELECT sym, total FROM example_big ORDER BY total DESC")
print(table.to_pydict())
assert table.column("sym").to_pylist() == ["AAPL", "MSFT"], table
assert table.column("total").to_pylist() == [100, 70], table
print("sql_and_dataframes: OK")
