"""Polarway side by side with the servers its users would run instead: roapi (DataFusion with
Flight SQL) and Spark Connect. Each contest starts a fresh Polarway worker beside the peer, runs
every case on both in turn, compares both answers with local Polars, and samples both servers'
resident sets throughout.

Every contender does the same work its own users would write: Polarway through its Polars client,
roapi in SQL over ADBC, Spark through its DataFrame API. Data reaches each the way its users load
it: Polarway by DoPut, roapi and Spark from a parquet file the client writes.
"""

import sys
from pathlib import Path

import polars as pl
import polarway
from harness import PeakRss, cpu_seconds, median, ms, put, timed
from polars.testing import assert_frame_equal

# -- the work, in Polars: what Polarway runs, and the reference every answer is compared with ----

def group_by(f, i):
    """Sum, mean and count per key; the count's name varies by repetition, since Polarway keys
    results by their request and would answer a repeated one from its store."""
    return f.group_by("k").agg(total=pl.col("v").sum(), mean=pl.col("v").mean(), **{f"n{i}": pl.col("v").count()})


def five_steps(f, dim, i):
    return (f.filter(pl.col("v") > i).with_columns(w=pl.col("v") * 2 + 1).join(dim, on="k")
            .group_by("grp").agg(total=(pl.col("w") * pl.col("weight")).sum(), n=pl.col("w").count())
            .sort("total", descending=True))


def small_filter(f, i):
    return f.filter((pl.col("qty") > i % 997) & (pl.col("day") != i % 365))


def kvs(rows):
    """The upload and group_by shape: an int key (1,000 groups), a float, a short string."""
    i = pl.int_range(0, rows, eager=True)
    return pl.DataFrame({"k": (i * 7919) % 1000, "v": i.cast(pl.Float64) * 0.5,
                         "s": pl.Series(["ab", "cd", "ef", "gh"]).sample(rows, with_replacement=True, seed=2)})


def dimension(rows=10_000):
    """The other side of the pipeline's join: 10k keys, of which the fact table uses 1,000."""
    k = pl.int_range(0, rows, eager=True)
    return pl.DataFrame({"k": k, "grp": k % 50, "weight": (k % 97).cast(pl.Float64) * 0.01 + 1.0})


def agree(got, want, what, order=None):
    """Equal to local Polars up to float summation order; rows compared sorted by `order`."""
    got = got if isinstance(got, pl.DataFrame) else pl.from_arrow(got)
    order = order or want.columns
    try:
        assert_frame_equal(got.select(want.columns).sort(order), want.sort(order),
                           check_dtypes=False, check_exact=False, rel_tol=1e-9)
    except (AssertionError, pl.exceptions.PolarsError) as e:
        raise AssertionError(f"{what} disagrees with local Polars: {e}") from None


# -- the contenders -------------------------------------------------------------------------

class Polarway:
    name = "Polarway"

    def __init__(self, worker):
        self.worker = worker
        self.flight = worker.client()
        self.client = polarway.connect(worker.location)
        self.conn = None

    def pids(self):
        return [self.worker.proc.pid]

    def load(self, name, frame, parquet):
        # DoPut in 128k-row batches, as a pyarrow client streams a large table.
        return self.client.frame(put(self.flight, frame.to_arrow(), name)["handle"])

    def drop(self, ref):
        self.client.action("drop_handle", {"handle": ref.handle})

    def group_by(self, ref, i):
        return group_by(ref, i).to_arrow()

    def five_steps(self, ref, dim, i):
        return five_steps(ref, dim, i).to_arrow()

    def small_filter(self, ref, i):
        return small_filter(ref, i).to_arrow()

    def fetch(self, ref):
        return self.client.fetch_arrow(ref.handle)

    def sql(self, query):
        """A query over ADBC, on one connection kept for the contest."""
        if self.conn is None:
            import adbc_driver_flightsql.dbapi as flight_sql
            self.conn = flight_sql.connect(self.worker.location, autocommit=True)
        with self.conn.cursor() as cur:
            cur.execute(query)
            return cur.fetch_arrow_table()

    def stop(self):
        if self.conn is not None:
            self.conn.close()
        self.client.close()
        self.worker.stop()


class Roapi:
    name = "roapi"

    def __init__(self, tmp):
        from peers.roapi_peer import Roapi as Server

        seed = tmp / "roapi-seed.parquet"
        pl.DataFrame({"x": [1]}).write_parquet(seed)  # it will not start without a table
        self.server = Server(str(Path(sys.executable).parent / "roapi"), {"seed": str(seed)})

    def pids(self):
        return [self.server.proc.pid]

    def load(self, name, frame, parquet):
        frame.write_parquet(parquet)
        self.server.register(name, str(parquet))
        return name

    def drop(self, ref):
        pass  # the next load under the same name replaces it

    def group_by(self, t, i):
        return self.server.query(f"SELECT k, SUM(v) AS total, AVG(v) AS mean, COUNT(v) AS n{i} FROM {t} GROUP BY k")

    def five_steps(self, t, dim, i):
        return self.server.query(
            f"SELECT d.grp, SUM((t.v * 2 + 1) * d.weight) AS total, COUNT(t.v) AS n FROM {t} t JOIN {dim} d ON t.k = d.k "
            f"WHERE t.v > {i} GROUP BY d.grp ORDER BY total DESC")

    def small_filter(self, t, i):
        return self.server.query(f"SELECT * FROM {t} WHERE qty > {i % 997} AND day <> {i % 365}")

    def fetch(self, t):
        return self.server.query(f"SELECT * FROM {t}")

    def stop(self):
        self.server.stop()


class Spark:
    name = "Spark Connect"

    def __init__(self, tmp):
        from peers.spark_peer import SparkConnect

        self.server = SparkConnect()
        self.pid = self.server.pid()  # the JVM: driver and executors in one process (local[2])

    def pids(self):
        return [self.pid]

    def load(self, name, frame, parquet):
        # An Arrow upload of 10M rows runs the driver out of memory: Spark users load from files.
        frame.write_parquet(parquet)
        df = self.server.session.read.parquet(str(parquet)).cache()
        df.count()
        return df

    def drop(self, df):
        df.unpersist()

    def group_by(self, df, i):
        from pyspark.sql import functions as F
        return df.groupBy("k").agg(F.sum("v").alias("total"), F.avg("v").alias("mean"), F.count("v").alias(f"n{i}")).toArrow()

    def five_steps(self, df, dim, i):
        from pyspark.sql import functions as F
        return (df.filter(F.col("v") > i).withColumn("w", F.col("v") * 2 + 1).join(dim, on="k")
                .groupBy("grp").agg(F.sum(F.col("w") * F.col("weight")).alias("total"), F.count("w").alias("n"))
                .orderBy(F.col("total").desc()).toArrow())

    def small_filter(self, df, i):
        from pyspark.sql import functions as F
        return df.filter((F.col("qty") > i % 997) & (F.col("day") != i % 365)).toArrow()

    def fetch(self, df):
        return df.toArrow()

    def stop(self):
        self.server.stop()


# -- the contest ----------------------------------------------------------------------------

def contest(record, ours, peer, tmp, *, rows, big, small, reps, small_reps, target):
    """Runs every case on `ours` and `peer` in turn and records peer / Polarway for each, which
    must reach `target` (for roapi's group_by and Flight SQL, 1.0)."""
    name = peer.name
    sampler = PeakRss(ours.pids() + peer.pids())

    def versus(case, our_times, their_times, fmt, goal):
        ratio = median(their_times) / median(our_times)
        record(f"{case}: {name} / Polarway", fmt(our_times), fmt(their_times), f"{ratio:.2f}", f">= {goal}", ratio >= goal)

    cpu = {}  # server CPU seconds of the last `alternate`, per contender

    def alternate(n, ours_fn, theirs_fn, warm_up=1, check=None):
        """`n` timed runs of each, turn about, after `warm_up` untimed ones; the servers' CPU over
        the timed runs goes to `cpu`. Only the call is timed: `check(contender, result, i)`, when
        given, compares every result once the clock has stopped."""
        a, b = [], []
        cpu.update({ours: 0.0, peer: 0.0})
        for i in range(n + warm_up):
            for contender, fn, times in ((ours, ours_fn, a), (peer, theirs_fn, b)):
                before = cpu_seconds(contender.pids()[0])
                t, got = timed(lambda: fn(i))
                spent = cpu_seconds(contender.pids()[0]) - before
                if i >= warm_up:
                    times.append(t)
                    cpu[contender] += spent
                if check is not None:
                    check(contender, got, i)
        return a, b

    def against(want_fn, what, order):
        """A `check` for `alternate`: each result equals local Polars' answer for its run."""
        return lambda contender, got, i: agree(got, want_fn(i), f"{contender.name}'s {what}", order)

    def loaded(contender, what, frame, i):
        return contender.load(what, frame, tmp / f"{contender.name.replace(' ', '-')}-{what}-{i}.parquet")

    try:
        # Upload: the same name each time, the last one kept; the one before is dropped.
        facts = kvs(rows)
        held = {}

        def upload(contender, i):
            ref = loaded(contender, "kvs", facts, i)
            if contender in held:
                contender.drop(held[contender])
            held[contender] = ref

        up_ours, up_theirs = alternate(reps, lambda i: upload(ours, i), lambda i: upload(peer, i), warm_up=0)
        versus(f"upload {rows:,} rows", up_ours, up_theirs, lambda xs: ms(median(xs)), target)
        our_kvs, their_kvs = held[ours], held[peer]

        # group_by over the uploaded rows.
        local = facts.lazy()
        def want_group(i):
            return group_by(local, i).collect()
        g_ours, g_theirs = alternate(reps, lambda i: ours.group_by(our_kvs, i), lambda i: peer.group_by(their_kvs, i),
                                     check=against(want_group, "group_by", ["k"]))
        versus(f"group_by k over {rows:,} rows", g_ours, g_theirs, lambda xs: ms(median(xs)), 1.0 if name == "roapi" else target)
        def per_call(c):
            return cpu[c] / reps
        record(f"server CPU per group_by: {name} / Polarway", ms(per_call(ours)), ms(per_call(peer)),
               f"{per_call(peer) / max(per_call(ours), 1e-9):.2f}", "-", None)

        # The Flight SQL aggregation over ADBC, Polarway's SQL against roapi's.
        if hasattr(ours, "sql") and name == "roapi":
            sql = "SELECT k, SUM(v) AS total, AVG(v) AS mean, COUNT(v) AS n{} FROM {} GROUP BY k"
            s_ours, s_theirs = alternate(reps, lambda i: ours.sql(sql.format(i, "kvs")), lambda i: peer.group_by(their_kvs, i),
                                         check=against(want_group, "Flight SQL aggregation", ["k"]))
            versus("Flight SQL aggregation over ADBC", s_ours, s_theirs, lambda xs: ms(median(xs)), 1.0)

        # Five steps with a join against 10k rows.
        dim = dimension()
        our_dim, their_dim = loaded(ours, "dim", dim, 0), loaded(peer, "dim", dim, 0)
        def want_steps(i):
            return five_steps(local, dim.lazy(), i).collect()
        p_ours, p_theirs = alternate(reps, lambda i: ours.five_steps(our_kvs, our_dim, i),
                                     lambda i: peer.five_steps(their_kvs, their_dim, i),
                                     check=against(want_steps, "five steps", ["grp"]))
        versus(f"5 steps with a join over {rows:,} rows", p_ours, p_theirs, lambda xs: ms(median(xs)), target)
        for contender, ref in ((ours, our_kvs), (peer, their_kvs), (ours, our_dim), (peer, their_dim)):
            contender.drop(ref)
        held.clear()

        # Small filters: p50 and p99 of the time to the answer in the client.
        local_small = small.lazy()
        our_small, their_small = loaded(ours, "small", small, 0), loaded(peer, "small", small, 0)
        def want_small(i):
            return small_filter(local_small, i).collect()
        f_ours, f_theirs = alternate(small_reps, lambda i: ours.small_filter(our_small, i), lambda i: peer.small_filter(their_small, i), warm_up=3)
        for i in (0, small_reps // 2):
            agree(ours.small_filter(our_small, i), want_small(i), "Polarway's filter")
            agree(peer.small_filter(their_small, i), want_small(i), f"{name}'s filter")

        def pct(xs, q):
            xs = sorted(xs)
            return xs[min(len(xs) - 1, int(len(xs) * q))]

        p50, p99 = pct(f_theirs, 0.5) / pct(f_ours, 0.5), pct(f_theirs, 0.99) / pct(f_ours, 0.99)
        record(f"filter on {small.height:,} rows, p50 / p99: {name} / Polarway", f"{ms(pct(f_ours, 0.5))} / {ms(pct(f_ours, 0.99))}",
               f"{ms(pct(f_theirs, 0.5))} / {ms(pct(f_theirs, 0.99))}", f"{p50:.2f} / {p99:.2f}", f">= {target}",
               min(p50, p99) >= target)
        ours.drop(our_small)
        peer.drop(their_small)

        # A large fetch of numeric columns into the client.
        local_big = pl.from_arrow(big)
        our_big, their_big = loaded(ours, "big", local_big, 0), loaded(peer, "big", local_big, 0)
        for contender, ref in ((ours, our_big), (peer, their_big)):
            agree(contender.fetch(ref), local_big, f"{contender.name}'s fetch", ["id"])
        b_ours, b_theirs = alternate(reps, lambda i: ours.fetch(our_big), lambda i: peer.fetch(their_big), warm_up=0)
        def gbps(xs):
            return f"{big.nbytes / median(xs) / 1e9:.2f} GB/s"
        versus(f"fetch {big.nbytes >> 20} MiB", b_ours, b_theirs, gbps, target)
        ours.drop(our_big)
        peer.drop(their_big)
    finally:
        peak = sampler.stop()
    def gib(kib):
        return f"{kib / (1 << 20):.2f} GiB"
    [our_pid], [their_pid] = ours.pids(), peer.pids()
    record(f"peak server RSS: {name} / Polarway", gib(peak[our_pid]), gib(peak[their_pid]),
           f"{peak[their_pid] / max(1, peak[our_pid]):.2f}", "-", None)


def run(record, tmp, worker_factory, *, spark, rows, big, small, reps, small_reps):
    """The contests: roapi always, Spark Connect when asked (a JVM start: full runs)."""
    peers = [(Roapi, 1.5)] + ([(Spark, 3.0)] if spark else [])
    for make, target in peers:
        ours, peer = Polarway(worker_factory()), None
        try:
            peer = make(tmp)
            contest(record, ours, peer, tmp, rows=rows, big=big, small=small, reps=reps,
                    small_reps=small_reps, target=target)
        finally:
            if peer is not None:
                peer.stop()
            ours.stop()
