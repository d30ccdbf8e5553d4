"""The Polars-native client against real workers, case by case against the same lazy query in
local Polars, on data with nulls, with results kept in memory and in a shared directory."""

import datetime as dt
import json

import polars as pl
import polars.selectors as cs
import polarway
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from conftest_worker import Worker
from polars.testing import assert_frame_equal

N = 240


def data() -> pl.DataFrame:
    syms = ["AAPL", "msft", None, "GOOG", "aapl", "MSFT"]
    return pl.DataFrame({
        "sym": [syms[i % 6] for i in range(N)],
        "qty": [None if i % 7 == 3 else (i * 37) % 101 - 20 for i in range(N)],
        "price": [None if i % 11 == 5 else 100.0 + ((i * 13) % 17) / 4 for i in range(N)],
        "ts": [dt.datetime(2026, 1, 1) + dt.timedelta(minutes=17 * i) for i in range(N)],
        "day": [dt.date(2026, 1, 1) + dt.timedelta(days=i % 9) for i in range(N)],
        "tags": [None if i % 5 == 0 else list(range(i % 4)) for i in range(N)],
        "note": [None if i % 3 == 0 else f"n{i % 13}-x{i % 4}" for i in range(N)],
    })


def other() -> pl.DataFrame:
    return pl.DataFrame({
        "sym": ["aapl", "msft", "goog", "AAPL", None],
        "sector": ["tech", "soft", "ads", "TECH", "none"],
        "weight": [1.5, 2.0, None, 0.5, 9.0],
    })


col, lit = pl.col, pl.lit

# (id, query, row order matters). A query takes a frame and an `other` frame, and is written
# once: it runs on a RemoteFrame and on a local LazyFrame alike.
CASES = [
    ("filter_gt", lambda f, o: f.filter(col("qty") > 10), True),
    ("filter_null", lambda f, o: f.filter(col("price").is_null() | col("sym").is_null()), True),
    ("filter_is_in", lambda f, o: f.filter(col("sym").is_in(["AAPL", "GOOG"])), True),
    ("filter_between", lambda f, o: f.filter(col("qty").is_between(0, 40) & ~col("sym").is_null()), True),
    ("select_arith", lambda f, o: f.select("sym", (col("qty") * col("price")).alias("notional"), (col("qty") // 3).alias("q3")), True),
    ("when_then", lambda f, o: f.with_columns(
        size=pl.when(col("qty") > 50).then(lit("big")).when(col("qty") > 0).then(lit("small")).otherwise(lit("none"))), True),
    ("str_upper_len", lambda f, o: f.select(col("sym").str.to_uppercase().alias("u"), col("note").str.len_chars().alias("n")), True),
    ("str_contains", lambda f, o: f.filter(col("note").str.contains("x1")), True),
    ("str_slice_replace", lambda f, o: f.select(col("note").str.slice(1, 2).alias("s"), col("note").str.replace("-", "_").alias("r")), True),
    ("str_starts_split", lambda f, o: f.select(col("sym").str.starts_with("A").alias("a"), col("note").str.split("-").list.first().alias("head")), True),
    ("str_strip_pad", lambda f, o: f.select(col("note").str.strip_chars("n").alias("s"), col("sym").str.pad_start(6, "*").alias("p")), True),
    ("dt_parts", lambda f, o: f.select(col("ts").dt.year().alias("y"), col("ts").dt.month().alias("m"), col("ts").dt.hour().alias("h"), col("day").dt.weekday().alias("w")), True),
    ("dt_truncate", lambda f, o: f.select(col("ts").dt.truncate("1h").alias("t"), (col("ts") - col("ts").min()).dt.total_minutes().alias("mins")), True),
    ("dt_offset", lambda f, o: f.select(col("ts").dt.offset_by("1d").alias("t"), col("day").dt.month_start().alias("ms")), True),
    ("list_ops", lambda f, o: f.select(col("tags").list.len().alias("n"), col("tags").list.sum().alias("s"), col("tags").list.get(0, null_on_oob=True).alias("g")), True),
    ("list_contains", lambda f, o: f.filter(col("tags").list.contains(2)), True),
    ("over_sum", lambda f, o: f.with_columns(total=col("qty").sum().over("sym")), True),
    ("over_rank", lambda f, o: f.with_columns(r=col("price").rank("dense").over("sym")), True),
    ("rank_methods", lambda f, o: f.select(col("qty").rank("min").alias("a"), col("qty").rank("ordinal", descending=True).alias("b")), True),
    ("cast", lambda f, o: f.select(col("qty").cast(pl.Float32), col("day").cast(pl.String).alias("d"), col("price").cast(pl.Int32).alias("p")), True),
    ("rolling_mean", lambda f, o: f.select(col("price").rolling_mean(3).alias("m"), col("qty").rolling_sum(4, min_samples=2).alias("s")), True),
    ("rolling_by", lambda f, o: f.select(col("qty").rolling_max_by("ts", "1h").alias("m")), True),
    ("cum_ops", lambda f, o: f.select(col("qty").cum_sum().alias("s"), col("qty").cum_max().alias("m"), col("qty").cum_count().alias("c"), col("price").cum_min(reverse=True).alias("r")), True),
    ("quantile_agg", lambda f, o: f.group_by("sym").agg(col("price").quantile(0.25).alias("q"), col("qty").median().alias("med")), False),
    ("group_by_aggs", lambda f, o: f.group_by("sym", maintain_order=True).agg(
        col("qty").sum(), col("price").mean().alias("avg"), col("note").n_unique().alias("u"), pl.len(), col("qty").first().alias("f")), True),
    ("group_by_expr_key", lambda f, o: f.group_by(col("sym").str.to_lowercase().alias("s"), col("day").dt.weekday().alias("w")).agg(col("qty").max()), False),
    ("agg_std_min_max", lambda f, o: f.group_by("day").agg(col("price").std().alias("sd"), col("qty").min(), col("price").max()), False),
    ("selector_numeric", lambda f, o: f.select(cs.numeric()), True),
    ("selector_dtype", lambda f, o: f.select(cs.by_dtype(pl.String), cs.starts_with("p")), True),
    ("selector_with_columns", lambda f, o: f.with_columns((cs.float() * 2).name.suffix("_x2")), True),
    ("join_on_expr", lambda f, o: f.join(o, left_on=col("sym").str.to_lowercase(), right_on=col("sym").str.to_lowercase(), how="inner"), False),
    ("join_left", lambda f, o: f.join(o, on="sym", how="left"), False),
    ("join_semi_anti", lambda f, o: f.join(o, on="sym", how="semi").join(o, on="sym", how="anti"), False),
    ("sort_expr", lambda f, o: f.sort(col("qty").abs(), "ts", descending=[True, False], nulls_last=True), True),
    ("unique", lambda f, o: f.unique(subset=["sym", "day"], keep="first", maintain_order=True), True),
    ("fill_null", lambda f, o: f.fill_null(0).select("qty", "price"), True),
    ("drop_nans", lambda f, o: f.with_columns(r=pl.when(col("qty") > 10).then(lit(0.0) / lit(0.0)).otherwise(col("price"))).drop_nans("r"), True),
    ("fill_null_forward", lambda f, o: f.fill_null(strategy="forward").select("qty", "price", "sym"), True),
    ("top_k", lambda f, o: f.top_k(5, by="qty").select("qty"), False),
    ("bottom_k", lambda f, o: f.bottom_k(5, by=["price", "qty"]).select("price", "qty"), False),
    ("with_row_index", lambda f, o: f.with_row_index("i", offset=3).filter(col("i") % 7 == 0), True),
    ("explode", lambda f, o: f.select("sym", "tags").explode("tags", empty_as_null=False), True),
    ("reverse_gather", lambda f, o: f.reverse().gather_every(3, offset=1), True),
    ("shift_head_tail", lambda f, o: f.shift(2).head(20).tail(5), True),
    ("slice_drop_rename", lambda f, o: f.slice(10, 30).drop("tags").rename({"qty": "quantity"}), True),
    ("concat_str_format", lambda f, o: f.select(pl.concat_str([col("sym"), col("note")], separator=":").alias("c"), pl.format("{}@{}", "sym", "qty").alias("f")), True),
    ("math", lambda f, o: f.select(col("price").round(1).alias("r"), col("qty").abs().alias("a"), col("qty").clip(0, 50).alias("c"), col("price").log().alias("l")), True),
    ("coalesce_null_count", lambda f, o: f.select(pl.coalesce("sym", "note").alias("c"), col("qty").null_count().alias("n")), True),
    ("agg_filter_in_group", lambda f, o: f.group_by("sym", maintain_order=True).agg(col("qty").filter(col("qty") > 0).sum().alias("pos"), col("price").sort_by("ts").last().alias("last")), True),
    ("group_by_dynamic", lambda f, o: f.sort("ts").group_by_dynamic("ts", every="6h").agg(col("qty").sum(), pl.len()), True),
    ("rolling_group", lambda f, o: f.sort("ts").rolling("ts", period="2h").agg(col("qty").sum().alias("s")), True),
    ("join_asof", lambda f, o: f.sort("ts").join_asof(f.sort("ts").select("ts", col("qty").alias("prev")).filter(col("prev") > 50), on="ts", strategy="backward"), True),
    ("join_where", lambda f, o: f.join_where(o, col("price") > col("weight") * 60, col("qty") < 40), False),
    ("unnest", lambda f, o: f.select("sym", pl.struct("qty", pl.struct("price", "note").alias("inner")).alias("s")).unnest("s"), True),
]


@pytest.fixture(scope="module", params=["memory", "external"])
def remote(request, tmp_path_factory):
    env = {}
    if request.param == "external":
        env = {"POLARWAY_HANDLE_STORE": "external", "POLARWAY_STATE_DIR": str(tmp_path_factory.mktemp("state"))}
    worker = Worker(**env)
    pw = polarway.connect(worker.location)
    yield worker, pw, pw.upload(data()), pw.upload(other())
    worker.stop()


@pytest.mark.parametrize("name,query,ordered", CASES, ids=[c[0] for c in CASES])
def test_case_matches_local_polars(remote, name, query, ordered):
    _, _, frame, right = remote
    got = query(frame, right).collect()
    want = query(data().lazy(), other().lazy()).collect()
    assert_frame_equal(got, want, check_row_order=ordered)


@pytest.mark.parametrize("group_by", [None, "sym"])
def test_upsample_matches_local_polars(remote, group_by):
    # `upsample` is eager in Polars: the reference runs on a DataFrame.
    _, _, frame, _ = remote
    keys = ["sym", "ts"] if group_by else ["ts"]
    local = data().filter(col("sym").is_not_null()).sort(keys)
    remote_sorted = frame.filter(col("sym").is_not_null()).sort(keys)
    got = remote_sorted.upsample("ts", every="5m", group_by=group_by, maintain_order=True).collect()
    want = local.upsample("ts", every="5m", group_by=group_by, maintain_order=True)
    assert got.height > local.height, "upsampling adds rows"
    assert_frame_equal(got, want)


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40


def test_a_chain_is_one_round_trip_and_a_repeat_is_free(remote):
    worker, pw, frame, _ = remote
    chain = frame.filter(col("qty") > 0).with_columns(n=col("qty") * 2).group_by("sym").agg(col("n").sum())
    before = worker.persisted()
    first = chain.persist()
    assert worker.persisted() == before + 1, "one pipeline, one stored result"
    assert chain.persist().handle == first.handle
    assert worker.persisted() == before + 1, "the repeat was not recomputed"
    assert "AGGREGATE" in chain.explain() or "agg" in chain.explain().lower()
    schema = chain.collect_schema()
    assert list(schema.names()) == ["sym", "n"] and schema["n"] == pl.Int64
    assert chain.to_arrow().num_rows == chain.collect().height


def test_with_columns_keeps_the_order_given(remote):
    _, _, frame, _ = remote
    got = frame.with_columns(zeta=lit(1), alpha=lit(2), mid=lit(3)).collect()
    assert got.columns[-3:] == ["zeta", "alpha", "mid"]


def test_a_python_function_is_refused_on_the_client_before_anything_is_sent():
    # Nothing listens here: a call would fail with a transport error instead.
    pw = polarway.connect("grpc://127.0.0.1:9", retry=polarway.RetryPolicy(attempts=1))
    frame = pw.frame("pw1_" + "0" * 64)
    for bad in [col("qty").map_elements(lambda x: x + 1, return_dtype=pl.Int64),
                col("qty").map_batches(lambda s: s),
                col("qty").name.map(lambda n: n + "_x"),
                col("price").fill_nan(float("nan"))]:
        with pytest.raises(polarway.UnshippableExpression, match="cannot send"):
            frame.with_columns(bad)


def _raw_filter(client, handle, tree):
    body = json.dumps({"input": handle, "predicate": {"expr": tree}}).encode()
    return list(client.do_action(flight.Action("filter", body)))


def test_refused_constructs_answer_invalid_argument_naming_them_and_the_worker_keeps_serving(remote, tmp_path):
    worker, pw, frame, _ = remote
    client = worker.client()
    udf = json.loads(col("qty").map_elements(lambda x: x > 1, return_dtype=pl.Boolean).meta.serialize(format="json"))
    batches = json.loads(col("qty").map_batches(lambda s: s > 1).meta.serialize(format="json"))
    plugin = {"Function": {"input": [{"Column": "qty"}], "function": {"FfiPlugin": {
        "flags": 0, "lib": str(tmp_path / "libevil.so"), "symbol": "run", "kwargs": []}}}}
    scan = {"Function": {"input": [{"Column": "qty"}, {"SubPlan": [
        {"Scan": {"sources": {"Paths": ["s3://bucket/secret.parquet"]}, "unified_scan_args": {}}}, []]}],
        "function": {"Boolean": "IsIn"}}}
    deep = col("qty")
    for _ in range(100):
        deep = deep + 1
    deep_tree = json.loads((deep > 0).meta.serialize(format="json"))
    cases = [(udf, "map_elements"), (batches, "map_batches"), (plugin, "plugin"),
             (scan, "sub-plan"), (deep_tree, "too deep")]
    for tree, name in cases:
        # pyarrow raises ArrowInvalid for INVALID_ARGUMENT (and only for it).
        with pytest.raises(pa.ArrowInvalid) as err:
            _raw_filter(client, frame.handle, tree)
        assert name in str(err.value), (name, str(err.value))
        # Still serving, with the stored input intact.
        assert frame.filter(col("qty") > 90).collect().height == data().filter(col("qty") > 90).height
    client.close()


def test_an_expression_that_does_not_decode_names_the_supported_versions(remote):
    worker, _, frame, _ = remote
    client = worker.client()
    with pytest.raises(pa.ArrowInvalid, match="Python Polars 1.43 to 2.1"):
        _raw_filter(client, frame.handle, {"NoSuchNode": {"Column": "qty"}})
    client.close()


def test_readers_and_table_names_return_remote_frames(tmp_path):
    data().write_parquet(tmp_path / "t.parquet")
    worker = Worker(POLARWAY_DATA_DIR=str(tmp_path))
    try:
        pw = polarway.connect(worker.location)
        read = pw.read_parquet("t.parquet", columns=["sym", "qty"])
        assert_frame_equal(read.filter(col("qty") > 0).collect(), data().select("sym", "qty").filter(col("qty") > 0))
        pw.upload(other(), name="sectors")
        assert_frame_equal(pw.table("sectors").collect(), other())
        assert "explode" in pw.operations()
        with pytest.raises(ValueError, match="no operation"):
            read.pipe("no_such_op")
    finally:
        worker.stop()
