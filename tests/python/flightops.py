"""The three calls every test makes, over plain pyarrow.flight."""

import json

import polars as pl
import pyarrow.flight as flight


def upload(client, name, df: pl.DataFrame, options=None) -> dict:
    table = df.to_arrow()
    writer, reader = client.do_put(flight.FlightDescriptor.for_path(name), table.schema, options=options)
    writer.write_table(table)
    writer.done_writing()
    meta = json.loads(reader.read().to_pybytes())
    writer.close()
    return meta


def action(client, op, body, options=None) -> dict:
    results = list(client.do_action(flight.Action(op, json.dumps(body).encode()), options=options))
    assert len(results) == 1
    return json.loads(results[0].body.to_pybytes())


def fetch(client, handle, options=None) -> pl.DataFrame:
    return pl.from_arrow(client.do_get(flight.Ticket(handle.encode()), options=options).read_all())
