"""Spark Connect (PyPI `pyspark[connect]` on Debian's JRE): the standard remote-DataFrame
protocol, the service a user would stand up instead of Polarway. The server jar and its start
script ship in the wheel, so nothing comes from Maven.

    peer = SparkConnect(cores=2)          # local[2], bound to 127.0.0.1
    df = peer.session.read.parquet(path)  # large inputs load from parquet: an Arrow upload of
    table = df.toArrow()                  # 10M rows runs the driver out of memory
    peer.stop()
"""

import os
import subprocess
import tempfile
import time
from pathlib import Path

from fleet import free_port  # tests/python, on the path benches/e2e.py sets


class SparkConnect:
    def __init__(self, cores=2, driver_memory="6g"):
        import pyspark
        from pyspark.sql import SparkSession

        self.home = Path(pyspark.__file__).parent
        self.dirs = tempfile.mkdtemp(prefix="polarway-spark-")
        self.env = {**os.environ, "SPARK_HOME": str(self.home), "SPARK_LOG_DIR": self.dirs, "SPARK_PID_DIR": self.dirs}
        port = free_port()
        subprocess.run([str(self.home / "sbin" / "start-connect-server.sh"), "--master", f"local[{cores}]",
                        "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
                        "--conf", f"spark.connect.grpc.binding.port={port}",
                        "--conf", "spark.driver.maxResultSize=4g", "--conf", f"spark.driver.memory={driver_memory}",
                        "--conf", "spark.ui.enabled=false"],
                       env=self.env, check=True, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while True:
            try:
                self.session = SparkSession.builder.remote(f"sc://127.0.0.1:{port}").getOrCreate()
                self.session.range(1).toArrow()
                break
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("Spark Connect did not start")
                time.sleep(0.5)

    def pid(self):
        for f in Path(self.dirs).glob("*.pid"):
            return int(f.read_text().strip())
        return None

    def stop(self):
        session = getattr(self, "session", None)
        if session is not None:
            session.stop()
        pid = self.pid()
        if pid is not None:
            subprocess.run(["kill", str(pid)], stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", self.dirs])
