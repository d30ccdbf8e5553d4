"""TPC-H: the 22 queries, written from the TPC-H specification (2.18), in two forms.

- `POLARS[n](t)`: Polars' lazy API. `t(name)` gives a table as a frame: a local `pl.LazyFrame`
  (`pl.scan_parquet`) or a Polarway `RemoteFrame` (`pw.dataset(name)`, `pw.scan_parquet(...)`);
  the same function runs on both, so its answers can be compared.
- `SQL[n]`: SQL that DataFusion (Polarway's Flight SQL) and DuckDB both run.

The substitution parameters are the specification's validation values; Q11's fraction is
0.0001 at every scale. Data comes from `tpchgen-cli` (PyPI) as Parquet, one file per table.
Decimal columns are cast to Float64 only where a ratio or mean is taken, so that both engines
round the same way.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Callable

import polars as pl

TABLES = ["region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem"]


def generate(scale: float, out: Path) -> Path:
    """Writes the tables at `scale` as `<out>/<table>.parquet` (once), and returns `out`."""
    out.mkdir(parents=True, exist_ok=True)
    if not all((out / f"{t}.parquet").exists() for t in TABLES):
        cli = Path(sys.executable).with_name("tpchgen-cli")
        subprocess.run([str(cli), "parquet", "-s", str(scale), f"--output-dir={out}"], check=True,
                       stdout=subprocess.DEVNULL)
    return out


def datasets_file(path: Path, prefix: str = "") -> Path:
    """A POLARWAY_DATASETS_FILE naming each table `<prefix><table>.parquet` under the data root."""
    import json
    path.write_text(json.dumps({t: {"path": f"{prefix}{t}.parquet", "format": "parquet"} for t in TABLES}))
    return path


def revenue() -> pl.Expr:
    return pl.col("l_extendedprice") * (1 - pl.col("l_discount"))


def between(column: str, lo: date, hi: date) -> pl.Expr:
    """lo <= column < hi."""
    return pl.col(column).is_between(lo, hi, closed="left")


def q1(t):
    return (t("lineitem").filter(pl.col("l_shipdate") <= date(1998, 9, 2))
            .group_by("l_returnflag", "l_linestatus")
            .agg(pl.col("l_quantity").sum().alias("sum_qty"),
                 pl.col("l_extendedprice").sum().alias("sum_base_price"),
                 revenue().sum().alias("sum_disc_price"),
                 (revenue() * (1 + pl.col("l_tax"))).sum().alias("sum_charge"),
                 pl.col("l_quantity").cast(pl.Float64).mean().alias("avg_qty"),
                 pl.col("l_extendedprice").cast(pl.Float64).mean().alias("avg_price"),
                 pl.col("l_discount").cast(pl.Float64).mean().alias("avg_disc"),
                 pl.len().alias("count_order"))
            .sort("l_returnflag", "l_linestatus"))


def q2(t):
    region = t("region").filter(pl.col("r_name") == "EUROPE")
    nation = t("nation").join(region, left_on="n_regionkey", right_on="r_regionkey")
    supplier = t("supplier").join(nation, left_on="s_nationkey", right_on="n_nationkey")
    part = t("part").filter((pl.col("p_size") == 15) & pl.col("p_type").str.ends_with("BRASS"))
    offers = (part.join(t("partsupp"), left_on="p_partkey", right_on="ps_partkey")
              .join(supplier, left_on="ps_suppkey", right_on="s_suppkey"))
    cheapest = offers.group_by("p_partkey").agg(pl.col("ps_supplycost").min().alias("min_cost"))
    return (offers.join(cheapest, on="p_partkey")
            .filter(pl.col("ps_supplycost") == pl.col("min_cost"))
            .select("s_acctbal", "s_name", "n_name", "p_partkey", "p_mfgr", "s_address", "s_phone", "s_comment")
            .sort(["s_acctbal", "n_name", "s_name", "p_partkey"], descending=[True, False, False, False])
            .head(100))


def q3(t):
    customer = t("customer").filter(pl.col("c_mktsegment") == "BUILDING")
    orders = t("orders").filter(pl.col("o_orderdate") < date(1995, 3, 15))
    lineitem = t("lineitem").filter(pl.col("l_shipdate") > date(1995, 3, 15))
    return (customer.join(orders, left_on="c_custkey", right_on="o_custkey")
            .join(lineitem, left_on="o_orderkey", right_on="l_orderkey")
            .group_by("o_orderkey", "o_orderdate", "o_shippriority")
            .agg(revenue().sum().alias("revenue"))
            .select(pl.col("o_orderkey").alias("l_orderkey"), "revenue", "o_orderdate", "o_shippriority")
            .sort(["revenue", "o_orderdate", "l_orderkey"], descending=[True, False, False])
            .head(10))


def q4(t):
    late = t("lineitem").filter(pl.col("l_commitdate") < pl.col("l_receiptdate"))
    return (t("orders").filter(between("o_orderdate", date(1993, 7, 1), date(1993, 10, 1)))
            .join(late, left_on="o_orderkey", right_on="l_orderkey", how="semi")
            .group_by("o_orderpriority").agg(pl.len().alias("order_count"))
            .sort("o_orderpriority"))


def q5(t):
    region = t("region").filter(pl.col("r_name") == "ASIA")
    nation = t("nation").join(region, left_on="n_regionkey", right_on="r_regionkey")
    customer = t("customer").join(nation, left_on="c_nationkey", right_on="n_nationkey")
    orders = t("orders").filter(between("o_orderdate", date(1994, 1, 1), date(1995, 1, 1)))
    return (customer.join(orders, left_on="c_custkey", right_on="o_custkey")
            .join(t("lineitem"), left_on="o_orderkey", right_on="l_orderkey")
            .join(t("supplier"), left_on=["l_suppkey", "c_nationkey"], right_on=["s_suppkey", "s_nationkey"])
            .group_by("n_name").agg(revenue().sum().alias("revenue"))
            .sort("revenue", descending=True))


def q6(t):
    return (t("lineitem")
            .filter(between("l_shipdate", date(1994, 1, 1), date(1995, 1, 1))
                    & pl.col("l_discount").cast(pl.Float64).is_between(0.05, 0.07)
                    & (pl.col("l_quantity") < 24))
            .select((pl.col("l_extendedprice") * pl.col("l_discount")).sum().alias("revenue")))


def q7(t):
    supp_nation = t("nation").select(pl.col("n_nationkey").alias("sn_key"), pl.col("n_name").alias("supp_nation"))
    cust_nation = t("nation").select(pl.col("n_nationkey").alias("cn_key"), pl.col("n_name").alias("cust_nation"))
    pair = (((pl.col("supp_nation") == "FRANCE") & (pl.col("cust_nation") == "GERMANY"))
            | ((pl.col("supp_nation") == "GERMANY") & (pl.col("cust_nation") == "FRANCE")))
    return (t("lineitem").filter(pl.col("l_shipdate").is_between(date(1995, 1, 1), date(1996, 12, 31)))
            .join(t("supplier"), left_on="l_suppkey", right_on="s_suppkey")
            .join(t("orders"), left_on="l_orderkey", right_on="o_orderkey")
            .join(t("customer"), left_on="o_custkey", right_on="c_custkey")
            .join(supp_nation, left_on="s_nationkey", right_on="sn_key")
            .join(cust_nation, left_on="c_nationkey", right_on="cn_key")
            .filter(pair)
            .with_columns(pl.col("l_shipdate").dt.year().alias("l_year"), revenue().alias("volume"))
            .group_by("supp_nation", "cust_nation", "l_year").agg(pl.col("volume").sum().alias("revenue"))
            .sort("supp_nation", "cust_nation", "l_year"))


def q8(t):
    region = t("region").filter(pl.col("r_name") == "AMERICA")
    american = t("nation").join(region, left_on="n_regionkey", right_on="r_regionkey").select("n_nationkey")
    supplier_nation = t("nation").select(pl.col("n_nationkey").alias("sn_key"), pl.col("n_name").alias("nation"))
    volume = revenue().cast(pl.Float64)
    return (t("part").filter(pl.col("p_type") == "ECONOMY ANODIZED STEEL")
            .join(t("lineitem"), left_on="p_partkey", right_on="l_partkey")
            .join(t("orders").filter(pl.col("o_orderdate").is_between(date(1995, 1, 1), date(1996, 12, 31))),
                  left_on="l_orderkey", right_on="o_orderkey")
            .join(t("customer"), left_on="o_custkey", right_on="c_custkey")
            .join(american, left_on="c_nationkey", right_on="n_nationkey", how="semi")
            .join(t("supplier"), left_on="l_suppkey", right_on="s_suppkey")
            .join(supplier_nation, left_on="s_nationkey", right_on="sn_key")
            .with_columns(pl.col("o_orderdate").dt.year().alias("o_year"), volume.alias("volume"))
            .group_by("o_year")
            .agg((pl.when(pl.col("nation") == "BRAZIL").then(pl.col("volume")).otherwise(0.0).sum()
                  / pl.col("volume").sum()).alias("mkt_share"))
            .sort("o_year"))


def q9(t):
    amount = revenue() - pl.col("ps_supplycost") * pl.col("l_quantity")
    return (t("part").filter(pl.col("p_name").str.contains("green", literal=True))
            .join(t("lineitem"), left_on="p_partkey", right_on="l_partkey")
            .join(t("supplier"), left_on="l_suppkey", right_on="s_suppkey")
            .join(t("partsupp"), left_on=["l_suppkey", "p_partkey"], right_on=["ps_suppkey", "ps_partkey"])
            .join(t("orders"), left_on="l_orderkey", right_on="o_orderkey")
            .join(t("nation"), left_on="s_nationkey", right_on="n_nationkey")
            .with_columns(pl.col("n_name").alias("nation"), pl.col("o_orderdate").dt.year().alias("o_year"),
                          amount.alias("amount"))
            .group_by("nation", "o_year").agg(pl.col("amount").sum().alias("sum_profit"))
            .sort(["nation", "o_year"], descending=[False, True]))


def q10(t):
    orders = t("orders").filter(between("o_orderdate", date(1993, 10, 1), date(1994, 1, 1)))
    returned = t("lineitem").filter(pl.col("l_returnflag") == "R")
    return (t("customer").join(orders, left_on="c_custkey", right_on="o_custkey")
            .join(returned, left_on="o_orderkey", right_on="l_orderkey")
            .join(t("nation"), left_on="c_nationkey", right_on="n_nationkey")
            .group_by("c_custkey", "c_name", "c_acctbal", "c_phone", "n_name", "c_address", "c_comment")
            .agg(revenue().sum().alias("revenue"))
            .select("c_custkey", "c_name", "revenue", "c_acctbal", "n_name", "c_address", "c_phone", "c_comment")
            .sort(["revenue", "c_custkey"], descending=[True, False])
            .head(20))


def q11(t):
    value = (pl.col("ps_supplycost") * pl.col("ps_availqty")).cast(pl.Float64)
    german = (t("partsupp").join(t("supplier"), left_on="ps_suppkey", right_on="s_suppkey")
              .join(t("nation").filter(pl.col("n_name") == "GERMANY"), left_on="s_nationkey", right_on="n_nationkey")
              .with_columns(value.alias("value")))
    threshold = german.select((pl.col("value").sum() * 0.0001).alias("threshold"))
    return (german.group_by("ps_partkey").agg(pl.col("value").sum())
            .join(threshold, how="cross")
            .filter(pl.col("value") > pl.col("threshold"))
            .select("ps_partkey", "value")
            .sort(["value", "ps_partkey"], descending=[True, False]))


def q12(t):
    lineitem = t("lineitem").filter(
        pl.col("l_shipmode").is_in(["MAIL", "SHIP"]) & (pl.col("l_commitdate") < pl.col("l_receiptdate"))
        & (pl.col("l_shipdate") < pl.col("l_commitdate"))
        & between("l_receiptdate", date(1994, 1, 1), date(1995, 1, 1)))
    high = pl.col("o_orderpriority").is_in(["1-URGENT", "2-HIGH"])
    return (t("orders").join(lineitem, left_on="o_orderkey", right_on="l_orderkey")
            .group_by("l_shipmode")
            .agg(high.cast(pl.Int64).sum().alias("high_line_count"),
                 (~high).cast(pl.Int64).sum().alias("low_line_count"))
            .sort("l_shipmode"))


def q13(t):
    orders = t("orders").filter(~pl.col("o_comment").str.contains("special.*requests"))
    return (t("customer").join(orders, left_on="c_custkey", right_on="o_custkey", how="left")
            .group_by("c_custkey").agg(pl.col("o_orderkey").count().cast(pl.Int64).alias("c_count"))
            .group_by("c_count").agg(pl.len().alias("custdist"))
            .sort(["custdist", "c_count"], descending=[True, True]))


def q14(t):
    volume = revenue().cast(pl.Float64)
    return (t("lineitem").filter(between("l_shipdate", date(1995, 9, 1), date(1995, 10, 1)))
            .join(t("part"), left_on="l_partkey", right_on="p_partkey")
            .select((100.0 * pl.when(pl.col("p_type").str.starts_with("PROMO")).then(volume).otherwise(0.0).sum()
                     / volume.sum()).alias("promo_revenue")))


def q15(t):
    revenue0 = (t("lineitem").filter(between("l_shipdate", date(1996, 1, 1), date(1996, 4, 1)))
                .group_by("l_suppkey").agg(revenue().sum().alias("total_revenue")))
    top = revenue0.select(pl.col("total_revenue").max().alias("max_revenue"))
    return (t("supplier").join(revenue0, left_on="s_suppkey", right_on="l_suppkey")
            .join(top, left_on="total_revenue", right_on="max_revenue")
            .select("s_suppkey", "s_name", "s_address", "s_phone", "total_revenue")
            .sort("s_suppkey"))


def q16(t):
    complaints = t("supplier").filter(pl.col("s_comment").str.contains("Customer.*Complaints")).select("s_suppkey")
    part = t("part").filter((pl.col("p_brand") != "Brand#45") & ~pl.col("p_type").str.starts_with("MEDIUM POLISHED")
                            & pl.col("p_size").is_in([49, 14, 23, 45, 19, 3, 36, 9]))
    return (t("partsupp").join(part, left_on="ps_partkey", right_on="p_partkey")
            .join(complaints, left_on="ps_suppkey", right_on="s_suppkey", how="anti")
            .group_by("p_brand", "p_type", "p_size")
            .agg(pl.col("ps_suppkey").n_unique().cast(pl.Int64).alias("supplier_cnt"))
            .sort(["supplier_cnt", "p_brand", "p_type", "p_size"], descending=[True, False, False, False]))


def q17(t):
    lines = (t("part").filter((pl.col("p_brand") == "Brand#23") & (pl.col("p_container") == "MED BOX"))
             .join(t("lineitem"), left_on="p_partkey", right_on="l_partkey"))
    small = lines.group_by("p_partkey").agg((0.2 * pl.col("l_quantity").cast(pl.Float64).mean()).alias("small_qty"))
    return (lines.join(small, on="p_partkey")
            .filter(pl.col("l_quantity").cast(pl.Float64) < pl.col("small_qty"))
            .select((pl.col("l_extendedprice").cast(pl.Float64).sum() / 7.0).alias("avg_yearly")))


def q18(t):
    large = (t("lineitem").group_by("l_orderkey").agg(pl.col("l_quantity").sum().alias("total"))
             .filter(pl.col("total") > 300))
    return (t("orders").join(large, left_on="o_orderkey", right_on="l_orderkey", how="semi")
            .join(t("customer"), left_on="o_custkey", right_on="c_custkey")
            .join(t("lineitem"), left_on="o_orderkey", right_on="l_orderkey")
            .group_by("c_name", "o_custkey", "o_orderkey", "o_orderdate", "o_totalprice")
            .agg(pl.col("l_quantity").sum().alias("sum_qty"))
            .select("c_name", pl.col("o_custkey").alias("c_custkey"), "o_orderkey", "o_orderdate", "o_totalprice",
                    "sum_qty")
            .sort(["o_totalprice", "o_orderdate", "o_orderkey"], descending=[True, False, False])
            .head(100))


def q19(t):
    def kind(brand, containers, lo, hi, size):
        return ((pl.col("p_brand") == brand) & pl.col("p_container").is_in(containers)
                & pl.col("l_quantity").cast(pl.Float64).is_between(lo, hi) & pl.col("p_size").is_between(1, size))

    shipped = pl.col("l_shipmode").is_in(["AIR", "AIR REG"]) & (pl.col("l_shipinstruct") == "DELIVER IN PERSON")
    return (t("lineitem").join(t("part"), left_on="l_partkey", right_on="p_partkey")
            .filter(shipped & (kind("Brand#12", ["SM CASE", "SM BOX", "SM PACK", "SM PKG"], 1, 11, 5)
                               | kind("Brand#23", ["MED BAG", "MED BOX", "MED PKG", "MED PACK"], 10, 20, 10)
                               | kind("Brand#34", ["LG CASE", "LG BOX", "LG PACK", "LG PKG"], 20, 30, 15)))
            .select(revenue().sum().alias("revenue")))


def q20(t):
    forest = t("part").filter(pl.col("p_name").str.starts_with("forest")).select("p_partkey")
    shipped = (t("lineitem").filter(between("l_shipdate", date(1994, 1, 1), date(1995, 1, 1)))
               .group_by("l_partkey", "l_suppkey")
               .agg((0.5 * pl.col("l_quantity").cast(pl.Float64).sum()).alias("half_qty")))
    excess = (t("partsupp").join(forest, left_on="ps_partkey", right_on="p_partkey", how="semi")
              .join(shipped, left_on=["ps_partkey", "ps_suppkey"], right_on=["l_partkey", "l_suppkey"])
              .filter(pl.col("ps_availqty").cast(pl.Float64) > pl.col("half_qty")))
    return (t("supplier").join(excess, left_on="s_suppkey", right_on="ps_suppkey", how="semi")
            .join(t("nation").filter(pl.col("n_name") == "CANADA"), left_on="s_nationkey", right_on="n_nationkey")
            .select("s_name", "s_address")
            .sort("s_name"))


def q21(t):
    lineitem = t("lineitem")
    late = lineitem.filter(pl.col("l_receiptdate") > pl.col("l_commitdate"))
    shared = (lineitem.group_by("l_orderkey").agg(pl.col("l_suppkey").n_unique().alias("suppliers"))
              .filter(pl.col("suppliers") > 1))
    alone = (late.group_by("l_orderkey").agg(pl.col("l_suppkey").n_unique().alias("late_suppliers"))
             .filter(pl.col("late_suppliers") == 1))
    return (late.join(shared, on="l_orderkey", how="semi")
            .join(alone, on="l_orderkey", how="semi")
            .join(t("orders").filter(pl.col("o_orderstatus") == "F"), left_on="l_orderkey", right_on="o_orderkey",
                  how="semi")
            .join(t("supplier"), left_on="l_suppkey", right_on="s_suppkey")
            .join(t("nation").filter(pl.col("n_name") == "SAUDI ARABIA"), left_on="s_nationkey",
                  right_on="n_nationkey", how="semi")
            .group_by("s_name").agg(pl.len().alias("numwait"))
            .sort(["numwait", "s_name"], descending=[True, False])
            .head(100))


def q22(t):
    codes = ["13", "31", "23", "29", "30", "18", "17"]
    customer = (t("customer").with_columns(pl.col("c_phone").str.slice(0, 2).alias("cntrycode"))
                .filter(pl.col("cntrycode").is_in(codes)))
    average = (customer.filter(pl.col("c_acctbal") > 0)
               .select(pl.col("c_acctbal").cast(pl.Float64).mean().alias("avg_bal")))
    return (customer.join(t("orders"), left_on="c_custkey", right_on="o_custkey", how="anti")
            .join(average, how="cross")
            .filter(pl.col("c_acctbal").cast(pl.Float64) > pl.col("avg_bal"))
            .group_by("cntrycode").agg(pl.len().alias("numcust"), pl.col("c_acctbal").sum().alias("totacctbal"))
            .sort("cntrycode"))


POLARS: dict[int, Callable] = {i: globals()[f"q{i}"] for i in range(1, 23)}

SQL: dict[int, str] = {
    1: """select l_returnflag, l_linestatus, sum(l_quantity) as sum_qty, sum(l_extendedprice) as sum_base_price,
        sum(l_extendedprice * (1 - l_discount)) as sum_disc_price,
        sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) as sum_charge,
        avg(cast(l_quantity as double)) as avg_qty, avg(cast(l_extendedprice as double)) as avg_price,
        avg(cast(l_discount as double)) as avg_disc, count(*) as count_order
        from lineitem where l_shipdate <= date '1998-09-02'
        group by l_returnflag, l_linestatus order by l_returnflag, l_linestatus""",
    2: """select s_acctbal, s_name, n_name, p_partkey, p_mfgr, s_address, s_phone, s_comment
        from part, supplier, partsupp, nation, region
        where p_partkey = ps_partkey and s_suppkey = ps_suppkey and p_size = 15 and p_type like '%BRASS'
          and s_nationkey = n_nationkey and n_regionkey = r_regionkey and r_name = 'EUROPE'
          and ps_supplycost = (select min(ps_supplycost) from partsupp, supplier, nation, region
                               where p_partkey = ps_partkey and s_suppkey = ps_suppkey
                                 and s_nationkey = n_nationkey and n_regionkey = r_regionkey and r_name = 'EUROPE')
        order by s_acctbal desc, n_name, s_name, p_partkey limit 100""",
    3: """select l_orderkey, sum(l_extendedprice * (1 - l_discount)) as revenue, o_orderdate, o_shippriority
        from customer, orders, lineitem
        where c_mktsegment = 'BUILDING' and c_custkey = o_custkey and l_orderkey = o_orderkey
          and o_orderdate < date '1995-03-15' and l_shipdate > date '1995-03-15'
        group by l_orderkey, o_orderdate, o_shippriority
        order by revenue desc, o_orderdate, l_orderkey limit 10""",
    4: """select o_orderpriority, count(*) as order_count from orders
        where o_orderdate >= date '1993-07-01' and o_orderdate < date '1993-10-01'
          and exists (select * from lineitem where l_orderkey = o_orderkey and l_commitdate < l_receiptdate)
        group by o_orderpriority order by o_orderpriority""",
    5: """select n_name, sum(l_extendedprice * (1 - l_discount)) as revenue
        from customer, orders, lineitem, supplier, nation, region
        where c_custkey = o_custkey and l_orderkey = o_orderkey and l_suppkey = s_suppkey
          and c_nationkey = s_nationkey and s_nationkey = n_nationkey and n_regionkey = r_regionkey
          and r_name = 'ASIA' and o_orderdate >= date '1994-01-01' and o_orderdate < date '1995-01-01'
        group by n_name order by revenue desc""",
    6: """select sum(l_extendedprice * l_discount) as revenue from lineitem
        where l_shipdate >= date '1994-01-01' and l_shipdate < date '1995-01-01'
          and l_discount between 0.05 and 0.07 and l_quantity < 24""",
    7: """select supp_nation, cust_nation, l_year, sum(volume) as revenue from (
          select n1.n_name as supp_nation, n2.n_name as cust_nation, extract(year from l_shipdate) as l_year,
                 l_extendedprice * (1 - l_discount) as volume
          from supplier, lineitem, orders, customer, nation n1, nation n2
          where s_suppkey = l_suppkey and o_orderkey = l_orderkey and c_custkey = o_custkey
            and s_nationkey = n1.n_nationkey and c_nationkey = n2.n_nationkey
            and ((n1.n_name = 'FRANCE' and n2.n_name = 'GERMANY') or (n1.n_name = 'GERMANY' and n2.n_name = 'FRANCE'))
            and l_shipdate between date '1995-01-01' and date '1996-12-31') as shipping
        group by supp_nation, cust_nation, l_year order by supp_nation, cust_nation, l_year""",
    8: """select o_year, sum(case when nation = 'BRAZIL' then volume else 0 end) / sum(volume) as mkt_share from (
          select extract(year from o_orderdate) as o_year,
                 cast(l_extendedprice * (1 - l_discount) as double) as volume, n2.n_name as nation
          from part, supplier, lineitem, orders, customer, nation n1, nation n2, region
          where p_partkey = l_partkey and s_suppkey = l_suppkey and l_orderkey = o_orderkey
            and o_custkey = c_custkey and c_nationkey = n1.n_nationkey and n1.n_regionkey = r_regionkey
            and r_name = 'AMERICA' and s_nationkey = n2.n_nationkey
            and o_orderdate between date '1995-01-01' and date '1996-12-31'
            and p_type = 'ECONOMY ANODIZED STEEL') as all_nations
        group by o_year order by o_year""",
    9: """select nation, o_year, sum(amount) as sum_profit from (
          select n_name as nation, extract(year from o_orderdate) as o_year,
                 l_extendedprice * (1 - l_discount) - ps_supplycost * l_quantity as amount
          from part, supplier, lineitem, partsupp, orders, nation
          where s_suppkey = l_suppkey and ps_suppkey = l_suppkey and ps_partkey = l_partkey
            and p_partkey = l_partkey and o_orderkey = l_orderkey and s_nationkey = n_nationkey
            and p_name like '%green%') as profit
        group by nation, o_year order by nation, o_year desc""",
    10: """select c_custkey, c_name, sum(l_extendedprice * (1 - l_discount)) as revenue, c_acctbal, n_name,
          c_address, c_phone, c_comment
        from customer, orders, lineitem, nation
        where c_custkey = o_custkey and l_orderkey = o_orderkey and o_orderdate >= date '1993-10-01'
          and o_orderdate < date '1994-01-01' and l_returnflag = 'R' and c_nationkey = n_nationkey
        group by c_custkey, c_name, c_acctbal, c_phone, n_name, c_address, c_comment
        order by revenue desc, c_custkey limit 20""",
    11: """select ps_partkey, sum(cast(ps_supplycost * ps_availqty as double)) as value
        from partsupp, supplier, nation
        where ps_suppkey = s_suppkey and s_nationkey = n_nationkey and n_name = 'GERMANY'
        group by ps_partkey having sum(cast(ps_supplycost * ps_availqty as double)) > (
          select sum(cast(ps_supplycost * ps_availqty as double)) * 0.0001 from partsupp, supplier, nation
          where ps_suppkey = s_suppkey and s_nationkey = n_nationkey and n_name = 'GERMANY')
        order by value desc, ps_partkey""",
    12: """select l_shipmode,
          sum(case when o_orderpriority = '1-URGENT' or o_orderpriority = '2-HIGH' then 1 else 0 end) as high_line_count,
          sum(case when o_orderpriority <> '1-URGENT' and o_orderpriority <> '2-HIGH' then 1 else 0 end) as low_line_count
        from orders, lineitem
        where o_orderkey = l_orderkey and l_shipmode in ('MAIL', 'SHIP') and l_commitdate < l_receiptdate
          and l_shipdate < l_commitdate and l_receiptdate >= date '1994-01-01' and l_receiptdate < date '1995-01-01'
        group by l_shipmode order by l_shipmode""",
    13: """select c_count, count(*) as custdist from (
          select c_custkey, count(o_orderkey) as c_count
          from customer left outer join orders on c_custkey = o_custkey and o_comment not like '%special%requests%'
          group by c_custkey) as c_orders
        group by c_count order by custdist desc, c_count desc""",
    14: """select 100.00 * sum(case when p_type like 'PROMO%' then cast(l_extendedprice * (1 - l_discount) as double)
          else 0 end) / sum(cast(l_extendedprice * (1 - l_discount) as double)) as promo_revenue
        from lineitem, part
        where l_partkey = p_partkey and l_shipdate >= date '1995-09-01' and l_shipdate < date '1995-10-01'""",
    15: """with revenue0 as (select l_suppkey as supplier_no, sum(l_extendedprice * (1 - l_discount)) as total_revenue
          from lineitem where l_shipdate >= date '1996-01-01' and l_shipdate < date '1996-04-01' group by l_suppkey)
        select s_suppkey, s_name, s_address, s_phone, total_revenue from supplier, revenue0
        where s_suppkey = supplier_no and total_revenue = (select max(total_revenue) from revenue0)
        order by s_suppkey""",
    16: """select p_brand, p_type, p_size, count(distinct ps_suppkey) as supplier_cnt
        from partsupp, part
        where p_partkey = ps_partkey and p_brand <> 'Brand#45' and p_type not like 'MEDIUM POLISHED%'
          and p_size in (49, 14, 23, 45, 19, 3, 36, 9)
          and ps_suppkey not in (select s_suppkey from supplier where s_comment like '%Customer%Complaints%')
        group by p_brand, p_type, p_size order by supplier_cnt desc, p_brand, p_type, p_size""",
    17: """select sum(cast(l_extendedprice as double)) / 7.0 as avg_yearly from lineitem, part
        where p_partkey = l_partkey and p_brand = 'Brand#23' and p_container = 'MED BOX'
          and cast(l_quantity as double) < (select 0.2 * avg(cast(l_quantity as double)) from lineitem
                                            where l_partkey = p_partkey)""",
    18: """select c_name, c_custkey, o_orderkey, o_orderdate, o_totalprice, sum(l_quantity) as sum_qty
        from customer, orders, lineitem
        where o_orderkey in (select l_orderkey from lineitem group by l_orderkey having sum(l_quantity) > 300)
          and c_custkey = o_custkey and o_orderkey = l_orderkey
        group by c_name, c_custkey, o_orderkey, o_orderdate, o_totalprice
        order by o_totalprice desc, o_orderdate, o_orderkey limit 100""",
    19: """select sum(l_extendedprice * (1 - l_discount)) as revenue from lineitem, part
        where p_partkey = l_partkey and l_shipmode in ('AIR', 'AIR REG') and l_shipinstruct = 'DELIVER IN PERSON'
          and ((p_brand = 'Brand#12' and p_container in ('SM CASE', 'SM BOX', 'SM PACK', 'SM PKG')
                and l_quantity >= 1 and l_quantity <= 11 and p_size between 1 and 5)
            or (p_brand = 'Brand#23' and p_container in ('MED BAG', 'MED BOX', 'MED PKG', 'MED PACK')
                and l_quantity >= 10 and l_quantity <= 20 and p_size between 1 and 10)
            or (p_brand = 'Brand#34' and p_container in ('LG CASE', 'LG BOX', 'LG PACK', 'LG PKG')
                and l_quantity >= 20 and l_quantity <= 30 and p_size between 1 and 15))""",
    20: """select s_name, s_address from supplier, nation
        where s_suppkey in (
            select ps_suppkey from partsupp
            where ps_partkey in (select p_partkey from part where p_name like 'forest%')
              and cast(ps_availqty as double) > (
                select 0.5 * sum(cast(l_quantity as double)) from lineitem
                where l_partkey = ps_partkey and l_suppkey = ps_suppkey
                  and l_shipdate >= date '1994-01-01' and l_shipdate < date '1995-01-01'))
          and s_nationkey = n_nationkey and n_name = 'CANADA'
        order by s_name""",
    21: """select s_name, count(*) as numwait from supplier, lineitem l1, orders, nation
        where s_suppkey = l1.l_suppkey and o_orderkey = l1.l_orderkey and o_orderstatus = 'F'
          and l1.l_receiptdate > l1.l_commitdate
          and exists (select * from lineitem l2 where l2.l_orderkey = l1.l_orderkey and l2.l_suppkey <> l1.l_suppkey)
          and not exists (select * from lineitem l3 where l3.l_orderkey = l1.l_orderkey
                          and l3.l_suppkey <> l1.l_suppkey and l3.l_receiptdate > l3.l_commitdate)
          and s_nationkey = n_nationkey and n_name = 'SAUDI ARABIA'
        group by s_name order by numwait desc, s_name limit 100""",
    22: """select cntrycode, count(*) as numcust, sum(c_acctbal) as totacctbal from (
          select substr(c_phone, 1, 2) as cntrycode, c_acctbal from customer
          where substr(c_phone, 1, 2) in ('13', '31', '23', '29', '30', '18', '17')
            and cast(c_acctbal as double) > (select avg(cast(c_acctbal as double)) from customer
                                             where c_acctbal > 0.00
                                               and substr(c_phone, 1, 2) in ('13', '31', '23', '29', '30', '18', '17'))
            and not exists (select * from orders where o_custkey = c_custkey)) as custsale
        group by cntrycode order by cntrycode""",
}


def normalised(df: pl.DataFrame) -> pl.DataFrame:
    """A frame with decimals as floats and views as strings, for comparing answers across engines."""
    casts = {}
    for name, dtype in df.schema.items():
        if dtype.is_decimal() or dtype.is_float():
            casts[name] = pl.Float64
        elif dtype.is_integer():
            casts[name] = pl.Int64
        elif dtype == pl.Date:
            casts[name] = pl.Date
    return df.cast(casts)


def assert_same(got: pl.DataFrame, want: pl.DataFrame, what: str) -> None:
    """Equal answers: the same columns in the same order, values within float rounding."""
    from polars.testing import assert_frame_equal
    got, want = normalised(got), normalised(want)
    assert got.columns == want.columns, f"{what}: columns {got.columns} != {want.columns}"
    assert got.height == want.height, f"{what}: {got.height} rows != {want.height}"
    assert_frame_equal(got, want, check_dtypes=False, check_exact=False, rel_tol=1e-6, abs_tol=1e-6)
