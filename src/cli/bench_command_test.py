#!/usr/bin/env python3
"""`edgelm bench` end to end on the bundled model: the JSON and markdown it
writes hold every row's fields, in range, with and without --paired-bandwidth.

  bench_command_test.py EDGELM_BINARY
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def run_bench(binary, out, extra):
    cmd = [binary, "bench", "-t", "1", "-r", "2", "-p", "8", "-n", "4",
           "--json", str(out / "bench.json"), "--markdown", str(out / "bench.md")] + extra
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text()


def main():
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for paired in (False, True):
            doc, table = run_bench(binary, out, ["--paired-bandwidth"] if paired else [])
            rows = doc["rows"]
            assert len(rows) == 1, rows
            row = rows[0]
            assert row["threads"] == 1, row
            assert row["decode_tokens_per_second"] > 0, row
            assert row["memory_bandwidth_gbs"] > 0, row
            assert 0 < row["roofline_fraction"] < 10, row
            assert row["peak_rss_mib"] > 0, row
            if paired:
                lo = row["paired_roofline_fraction_min"]
                mid = row["paired_roofline_fraction"]
                hi = row["paired_roofline_fraction_max"]
                assert 0 < lo <= mid <= hi < 10, row
                assert "(paired " in table, table
            else:
                assert "paired_roofline_fraction" not in row, row
                assert "paired" not in table, table
    print("bench_command_test: ok")


if __name__ == "__main__":
    main()
