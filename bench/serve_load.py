"""Bounded load test of ``edgesent serve`` against the in-process Predictor (issue 12's benchmark).

Starts the server itself on a free loopback port (127.0.0.1 only), sends a fixed number of single-text requests
from ``--data`` with 1, 8 and 32 concurrent clients (``--concurrency``), with dynamic batching on and off, and
stops by itself: every loop is bounded by its request count and by ``--timeout`` overall. In the same run it
measures the in-process ``Predictor`` at its best batch size (before any server starts, so they never compete
for cores) and reports:

- per batching mode and concurrency: throughput (texts/s), p50/p90/p99 latency, errors;
- the ratio of served throughput at the highest concurrency to the in-process best;
- server RSS after ``--leak-requests`` / 10 requests and after ``--leak-requests`` (no leak: within 10%).

Goals (issue 12), checked at the highest concurrency with batching on: served >= 0.7x in-process, p99 < 5x p50,
zero errors, RSS growth <= 10%. The load generator (httpx, asyncio) runs in this process on the same machine, so
on a small machine it competes with the server for cores: run it on a quiet machine and read the client CPU note.

Usage (on a quiet machine; writes results.json and results.md to --out)::

    python bench/serve_load.py --model models/sst2-minilm-int8 --data ../shared/data/sst2/dev.tsv \\
        --requests 2000 --concurrency 1,8,32 --out bench/results/serve_load

A quick check that it runs (tiny model, no figures worth reporting)::

    python bench/serve_load.py --model TINY_DIR --requests 200 --leak-requests 200 --out /tmp/serve_load
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edgesent.config.providers import PROVIDERS


GOALS = {"served_over_inprocess": 0.7, "p99_over_p50": 5.0, "errors": 0, "rss_growth": 0.10}
MODEL_NAME = "model"
IN_PROCESS_BATCH_SIZES = (1, 8, 16, 32, 64)
WARMUP_REQUESTS = 50


def read_texts(path: Path, limit: int = 100_000) -> list[str]:
    """The non-empty texts of a CSV/TSV/JSONL (``text`` or ``sentence`` column) or of a plain file, read as
    ``edgesent predict`` reads them."""
    from edgesent.data import iter_records

    texts = [r.text for r in itertools.islice(iter_records(path, strict=False), limit) if r.text.strip()]
    if not texts:
        raise SystemExit(f"{path}: no texts")
    return texts


def in_process_best(
    model: Path, texts: list[str], threads: int | None, n_texts: int, provider: str = "cpu"
) -> dict[str, Any]:
    """Texts/s of ``Predictor.predict`` per batch size over the same ``n_texts`` texts; the best one."""
    from edgesent.runtime import Predictor

    predictor = Predictor.load(model, provider=provider, threads=threads)
    sample = (texts * (n_texts // len(texts) + 1))[:n_texts]
    predictor.predict(sample[:64], batch_size=32)  # warm-up
    per_size = {}
    for size in IN_PROCESS_BATCH_SIZES:
        started = time.perf_counter()
        predictor.predict(sample, batch_size=size)
        per_size[size] = n_texts / (time.perf_counter() - started)
    best = max(per_size, key=lambda size: per_size[size])
    return {"texts_per_s": per_size[best], "batch_size": best, "per_batch_size": per_size, "texts": n_texts}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``edgesent serve`` in a child process on a free loopback port; stopped with SIGTERM."""

    def __init__(self, model: Path, args: argparse.Namespace, batching: bool, log_path: Path) -> None:
        import httpx

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "edgesent", "serve", f"{MODEL_NAME}={model}", "--port", str(self.port)]
        cmd += [
            "--provider",
            args.provider,
            "--max-batch",
            str(args.max_batch),
            "--max-wait-ms",
            str(args.max_wait_ms),
        ]
        cmd += ["--max-queue", "100000", "--timeout", "60"]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        cmd += [] if batching else ["--no-batching"]
        env = {k: v for k, v in os.environ.items() if k != "EDGESENT_API_KEYS"}
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._log, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited {self.proc.returncode}; see {log_path}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"server not ready within 120 s; see {log_path}")

    def rss_mib(self) -> float:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9
        finally:
            self._log.close()


async def _load(url: str, texts: list[str], n_requests: int, concurrency: int, deadline: float) -> dict[str, Any]:
    """``n_requests`` single-text requests from ``concurrency`` clients; latencies in ms, errors by kind."""
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = iter(range(n_requests))
    endpoint = f"/v1/models/{MODEL_NAME}/predict"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            for i in counter:
                started = time.perf_counter()
                try:
                    response = await client.post(endpoint, json={"texts": [texts[i % len(texts)]]})
                    ok = response.status_code == 200 and len(response.json()["results"]) == 1
                    kind = None if ok else f"http {response.status_code}"
                except httpx.HTTPError as err:
                    kind = type(err).__name__
                latencies.append((time.perf_counter() - started) * 1000)
                if kind is not None:
                    errors[kind] = errors.get(kind, 0) + 1

        started = time.perf_counter()
        timeout = max(deadline - time.monotonic(), 1.0)
        try:
            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout)
        except asyncio.TimeoutError:
            errors["bench timeout"] = n_requests - len(latencies)
        wall = time.perf_counter() - started
    done = len(latencies)
    cpu = os.times()
    return {
        "requests": done,
        "texts_per_s": done / wall,
        "p50_ms": _percentile(latencies, 50),
        "p90_ms": _percentile(latencies, 90),
        "p99_ms": _percentile(latencies, 99),
        "errors": errors,
        "wall_s": wall,
        "client_cpu_s": cpu.user + cpu.system,
    }


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run(args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + args.timeout
    texts = read_texts(args.data)
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "model": str(args.model),
        "data": str(args.data),
        "requests_per_cell": args.requests,
        "settings": {
            "provider": args.provider,
            "threads": args.threads,
            "max_batch": args.max_batch,
            "max_wait_ms": args.max_wait_ms,
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "in_process": in_process_best(args.model, texts, args.threads, max(args.requests, 512), args.provider),
        "served": {},
    }
    for batching in args.batching:
        server = Server(args.model, args, batching == "on", out_dir / f"server-batching-{batching}.log")
        try:
            cells = {}
            for concurrency in args.concurrency:
                asyncio.run(_load(server.url, texts, WARMUP_REQUESTS, concurrency, deadline))
                cells[str(concurrency)] = asyncio.run(_load(server.url, texts, args.requests, concurrency, deadline))
                print(
                    f"batching {batching}, {concurrency} clients: {_cell_line(cells[str(concurrency)])}",
                    file=sys.stderr,
                )
            if batching == "on" and args.leak_requests:
                report["rss"] = _leak_check(server, texts, args.leak_requests, max(args.concurrency), deadline)
        finally:
            exit_code = server.stop()
        report["served"][batching] = {"cells": cells, "exit_code_after_sigterm": exit_code}
    report["summary"] = _summary(report, max(args.concurrency))
    (out_dir / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "results.md").write_text(_markdown(report))
    return report


def _leak_check(server: Server, texts: list[str], total: int, concurrency: int, deadline: float) -> dict[str, Any]:
    """Server RSS after total/10 requests and after total requests (on a server already warmed by the cells)."""
    first = max(total // 10, 1)
    asyncio.run(_load(server.url, texts, first, concurrency, deadline))
    early = server.rss_mib()
    asyncio.run(_load(server.url, texts, total - first, concurrency, deadline))
    late = server.rss_mib()
    return {"after_requests": [first, total], "rss_mib": [early, late], "growth": late / early - 1}


def _summary(report: dict[str, Any], top: int) -> dict[str, Any]:
    best = report["in_process"]["texts_per_s"]
    summary: dict[str, Any] = {}
    for mode, served in report["served"].items():
        cell = served["cells"].get(str(top))
        if cell:
            summary[f"served_over_inprocess_{mode}"] = cell["texts_per_s"] / best
            summary[f"p99_over_p50_{mode}"] = cell["p99_ms"] / cell["p50_ms"]
            summary[f"errors_{mode}"] = sum(cell["errors"].values())
    if "on" in report["served"] and str(top) in report["served"]["on"]["cells"]:
        goals = {
            "served_over_inprocess": summary["served_over_inprocess_on"] >= GOALS["served_over_inprocess"],
            "p99_over_p50": summary["p99_over_p50_on"] < GOALS["p99_over_p50"],
            "errors": summary["errors_on"] == GOALS["errors"],
        }
        if "rss" in report:
            goals["rss_growth"] = report["rss"]["growth"] <= GOALS["rss_growth"]
        summary["goals_met"] = goals
    return summary


def _cell_line(cell: dict[str, Any]) -> str:
    errors = sum(cell["errors"].values())
    return (
        f"{cell['texts_per_s']:.0f} texts/s, p50 {cell['p50_ms']:.1f} ms, p99 {cell['p99_ms']:.1f} ms, {errors} errors"
    )


def _markdown(report: dict[str, Any]) -> str:
    ip = report["in_process"]
    lines = [
        "# edgesent serve: bounded load test",
        "",
        (
            f"Model `{report['model']}`, data `{report['data']}`, {report['requests_per_cell']} single-text requests per "
            f"cell, settings {report['settings']}, machine {report['machine']}."
        ),
        "",
        f"In-process Predictor, best batch size {ip['batch_size']}: **{ip['texts_per_s']:.0f} texts/s**.",
        "",
        "| batching | clients | texts/s | p50 ms | p90 ms | p99 ms | errors | x in-process |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode, served in report["served"].items():
        for concurrency, cell in served["cells"].items():
            lines.append(
                f"| {mode} | {concurrency} | {cell['texts_per_s']:.0f} | {cell['p50_ms']:.1f} | {cell['p90_ms']:.1f} | "
                f"{cell['p99_ms']:.1f} | {sum(cell['errors'].values())} | {cell['texts_per_s'] / ip['texts_per_s']:.2f} |"
            )
    if "rss" in report:
        rss = report["rss"]
        lines += [
            "",
            (
                f"Server RSS after {rss['after_requests'][0]} requests: {rss['rss_mib'][0]:.1f} MiB; after "
                f"{rss['after_requests'][1]}: {rss['rss_mib'][1]:.1f} MiB ({rss['growth']:+.1%})."
            ),
        ]
    lines += ["", f"Summary: `{json.dumps(report['summary'])}`", ""]
    return "\n".join(lines)


def main() -> None:
    repo = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="ONNX export directory (the SST-2 int8 model)")
    default_data = next(
        (p / "shared/data/sst2/dev.tsv" for p in repo.parents if (p / "shared/data/sst2/dev.tsv").is_file()),
        repo.parent / "shared/data/sst2/dev.tsv",
    )
    parser.add_argument("--data", type=Path, default=default_data, help="texts (default: ../shared/data/sst2/dev.tsv)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per (batching, concurrency) cell")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    parser.add_argument("--batching", type=lambda s: s.split(","), default=["on", "off"], help="on,off / on / off")
    parser.add_argument("--leak-requests", type=int, default=10_000, help="RSS after 1/10 of them and all; 0: skip")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (server and in-process)")
    parser.add_argument(
        "--provider", choices=PROVIDERS, default="cpu", help="the server's and the in-process predictor's"
    )
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=1800, help="overall limit in seconds")
    parser.add_argument("--out", type=Path, default=repo / "bench" / "out" / "serve_load")
    args = parser.parse_args()
    if not set(args.batching) <= {"on", "off"} or args.requests < 1 or min(args.concurrency) < 1:
        parser.error("--batching takes on,off; --requests and --concurrency must be positive")
    report = run(args)
    print(json.dumps(report["summary"], indent=2))
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
