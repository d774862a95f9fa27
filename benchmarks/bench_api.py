"""REST API read latency: 50 concurrent readers of the version and device lists, 1,000 devices.

The same store contents on SQLite (a WAL file) and on PostgreSQL (a real server
from ``tests/pg_support.py``), each served by waitress (8 threads) in its own
process; the readers are threads of this process with keep-alive connections.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import markdown_table, tool_versions, write_results

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DEVICES = 1000
VERSIONS = 100
READERS = 50
REQUESTS_PER_READER = 40
ROUTES = {
    "versions": "/api/v1/models/bench/versions?limit=100",
    "devices": "/api/v1/devices?limit=100",
}
TOOLS = ["flask", "flask-openapi3", "waitress", "psycopg"]
SERVER = """
import logging
import sys
from pathlib import Path
from control_plane.api import create_api
from control_plane.api.serve import serve_http
from control_plane.settings import Settings
from control_plane.store.factory import open_repositories
logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # 50 readers > 8 threads, as meant
repos = open_repositories(sys.argv[1])
app = create_api(repos, Settings(data_dir=Path(sys.argv[2])))
handle = serve_http(app, "127.0.0.1", 0, threads=8)
print(handle.port, flush=True)
sys.stdin.read()
handle.stop()
repos.close()
"""


def _seed(url: str) -> str:
    from control_plane.services.tokens import bootstrap_admin
    from control_plane.store.factory import open_repositories
    from control_plane.store.records import ModelCard, NewDevice

    repos = open_repositories(url)
    try:
        now = time.time()
        for i in range(DEVICES):
            labels = {"site": f"site-{i % 10}", "ring": "canary" if i % 20 == 0 else "main"}
            repos.devices.add(
                NewDevice(f"dev-{i:04d}", f"{i:064x}", labels=labels, profile_id="x86-64-generic"),
                at=now,
            )
        repos.models.add("bench", "benchmark model", "bench", now)
        card = ModelCard("benchmark", "none", "bench", {"accuracy": 0.9})
        for v in range(VERSIONS):
            repos.versions.add("bench", f"{v}", card, None, now)
        _, token = bootstrap_admin(repos, "bench")
        return token
    finally:
        repos.close()


def _readers(port: int, path: str, token: str) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(READERS)
    failures: list[str] = []

    def reader() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        start.wait()
        for _ in range(REQUESTS_PER_READER):
            began = time.perf_counter()
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
            answer = conn.getresponse()
            body = answer.read()
            mine.append(time.perf_counter() - began)
            if answer.status != 200 or len(json.loads(body)["items"]) != 100:
                failures.append(f"{answer.status} {body[:200]!r}")
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=reader) for _ in range(READERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(f"{len(failures)} failed reads, first: {failures[0]}")
    return latencies


def _measure(backend: str, url: str, work: Path) -> list[dict[str, Any]]:
    token = _seed(url)
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, url, str(work / f"data-{backend}")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    rows = []
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        for route, path in ROUTES.items():
            _readers(port, path, token)  # warm-up: connections, caches, the token's touch
            began = time.perf_counter()
            latencies = _readers(port, path, token)
            wall = time.perf_counter() - began
            ms = sorted(x * 1000 for x in latencies)
            rows.append(
                {
                    "backend": backend,
                    "route": route,
                    "requests": len(ms),
                    "p50_ms": round(statistics.median(ms), 1),
                    "p99_ms": round(ms[int(len(ms) * 0.99) - 1], 1),
                    "requests_per_s": round(len(ms) / wall, 0),
                }
            )
            logger.info("%s %s: %s", backend, route, rows[-1])
    finally:
        if server.stdin:
            server.stdin.close()
        server.wait(30)
    return rows


def run(results_dir: Path) -> str:
    sys.path.insert(0, str(ROOT / "tests"))
    from pg_support import INSTALL_HINT, PostgresServer, find_pg_bin

    work = Path(tempfile.mkdtemp(prefix="fleetcast-bench-api-"))
    load = os.getloadavg()[0]
    rows = _measure("sqlite", f"sqlite:///{work / 'store.db'}", work)
    bin_dir = find_pg_bin()
    if bin_dir is None:
        logger.warning("%s; PostgreSQL left out", INSTALL_HINT)
    else:
        pg = PostgresServer(bin_dir).start()
        try:
            rows += _measure("postgresql", pg.create_database(), work)
        finally:
            pg.stop()
    table = markdown_table(
        ["route (100 items a page)", "backend", "requests", "p50 ms", "p99 ms", "requests/s"],
        [
            [r["route"], r["backend"], r["requests"], r["p50_ms"], r["p99_ms"], r["requests_per_s"]]
            for r in sorted(rows, key=lambda r: (r["route"], r["backend"]))
        ],
    )
    markdown = "\n".join(
        [
            f"## REST API: {READERS} concurrent readers, {DEVICES} devices, {VERSIONS} versions",
            "",
            table,
            "",
            f"Each reader makes {REQUESTS_PER_READER} keep-alive GETs with a bearer token (a "
            "warm-up round first). The API runs under waitress (8 threads) in its own process; "
            "the readers are threads of the benchmark process on the same 2-core host, so "
            "latency includes queueing behind the 8 server threads (50 readers > 8 threads) "
            "and the clients' own CPU. SQLite serves every request on one connection (its "
            "repositories hold a lock per transaction); PostgreSQL from a pool of up to 10. "
            f"Host load average when it started: {load:.1f} (the host is shared). "
            "Command: `.venv/bin/python -m benchmarks api`.",
            "",
            f"Versions: {json.dumps(tool_versions(TOOLS))}",
        ]
    )
    write_results(results_dir, "api", markdown, {"load_average": load, "rows": rows})
    return markdown
