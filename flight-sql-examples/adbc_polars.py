"""ADBC -> Polars: load a table with adbc_ingest, query it with SQL, get a Polars frame.

    pip install adbc-driver-flightsql polars pyarrow
    python adbc_polars.py grpc://127.0.0.1:50051 [token]
"""

import sys

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flight_sql
import polars as pl

uri = sys.argv[1] if len(sys.argv) > 1 else "grpc://127.0.0.1:50051"
db_kwargs = {}
if len(sys.argv) > 2:
    db_kwargs[adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value] = f"Bearer {sys.argv[2]}"

orders = pl.DataFrame({
    "region": ["north", "south", "north", "east", "south", "north"],
    "amount": [120.0, 80.5, 99.5, 42.0, 17.5, 60.0],
})

with flight_sql.connect(uri, db_kwargs=db_kwargs, autocommit=True) as conn:
    with conn.cursor() as cur:
        cur.adbc_ingest("example_orders", orders.to_arrow(), mode="replace")
        cur.execute(
            "SELECT region, SUM(amount) AS total, COUNT(*) AS orders "
            "FROM example_orders WHERE amount > ? GROUP BY region ORDER BY total DESC",
            (20.0,),
        )
        result = pl.from_arrow(cur.fetch_arrow_table())

print(result)
expected = (
    orders.filter(pl.col("amount") > 20.0)
    .group_by("region").agg(total=pl.col("amount").sum(), orders=pl.len())
    .sort("total", descending=True)
)
assert result.to_dicts() == expected.to_dicts(), (result, expected)
print("adbc_polars: OK")
