"""Flight SQL commands for plain pyarrow.flight: the few protobuf bytes of a statement query."""

import pyarrow.flight as flight


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def statement_query(sql: str) -> flight.FlightDescriptor:
    """A command descriptor holding Any(CommandStatementQuery{query: sql})."""
    command = _field(1, sql.encode())
    any_message = _field(1, b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery") + _field(2, command)
    return flight.FlightDescriptor.for_command(any_message)
