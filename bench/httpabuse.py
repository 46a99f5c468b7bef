"""
Section C{httpabuse}: what abusive HTTP clients cost the other services.

    python bench/httpabuse.py [--seconds 5] [--slowloris 1000]
        [--trickle-interval 10] [--scrapers 20] [--idle-connections 10000]
        [--body 1000000000] [--echo-conns 50]

One netdemo daemon with TCP echo and HTTP (its default limits, except
C{--max-connections 20000 --max-per-peer 0} so that every abusive
connection reaches the service), pinned to the server CPU.  Echo round
trips (64 bytes, C{--echo-conns} connections, C{bench/loadgen.c}) are
measured in each phase:

  1. B{idle}: nothing else runs;
  2. B{slowloris}: C{--slowloris} connections to HTTP, each sending one byte
     of a never-ending header every C{--trickle-interval} seconds; the echo
     is measured over a window that covers the header deadline (10 s by
     default), and the table says when each connection was closed and what
     it was answered;
  3. B{scrapers}: C{--idle-connections} idle echo connections held open,
     and C{--scrapers} clients asking for C{/metrics} in a loop, each on a
     kept-alive connection, as fast as the daemon answers (the scrapers run
     at nice 19 on the load generator's CPU, so that they do not delay the
     echo's load generator);
  4. B{body}: one C{PUT} declaring a C{--body}-byte body, sent as fast as
     the daemon takes it: how much it took before closing, the temporary
     files it opened, and the bytes it wrote to storage (C{write_bytes} of
     C{/proc/PID/io}).

Targets (issue 11): the slowloris connections are closed at the header
deadline and the echo's p99 stays within twice its idle value; with the
scrapers, the echo's p99 stays under 5 ms; the body puts nothing on disk.

The section uses only options that older netdemo versions have too, so the
same command measures the code before and after a change.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import multiprocessing
import os
import selectors
import socket
import sys
import threading
import time
from argparse import ArgumentParser, Namespace
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as python bench/httpabuse.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import catalog  # noqa: E402
from bench.harness import Harness, Section, Server, standalone  # noqa: E402
from bench.launch import listeningEvent  # noqa: E402

#: What C{bench/run.py --quick} passes.
QUICK_ARGS = [
    "--seconds", "2", "--slowloris", "200", "--idle-connections", "2000",
    "--scrapers", "10", "--body", "100000000",
]  # fmt: skip

#: The header deadline the daemon runs with (its default).
HEADER_DEADLINE = 10.0

#: The echo p99 the scrapers must not push the echo above, in µs.
SCRAPER_TARGET_US = 5000.0

#: netdemo's command line: echo and HTTP, every abusive connection let in.
OPTIONS = [
    "--tcp", "tcp:0:interface=127.0.0.1:backlog=1024",
    "--http", "tcp:0:interface=127.0.0.1:backlog=1024",
    "--max-connections", "20000", "--max-per-peer", "0",
]  # fmt: skip


#: The options of this section: name, type, default, help.
ARGUMENTS: list[tuple[str, type, float, str]] = [
    ("--seconds", float, 5.0, "echo measurement per phase"),
    ("--echo-conns", int, 50, "echo load generator connections"),
    ("--slowloris", int, 1000, "slowloris connections"),
    (
        "--trickle-interval",
        float,
        10.0,
        "seconds between two header bytes of a slowloris connection",
    ),
    (
        "--idle-connections",
        int,
        10000,
        "idle echo connections held during the scrapers phase",
    ),
    ("--scrapers", int, 20, "concurrent /metrics scrapers"),
    ("--body", int, 1_000_000_000, "declared request body"),
]


def addArguments(parser: ArgumentParser) -> None:
    """
    The options of this section.
    """
    for name, kind, default, text in ARGUMENTS:
        parser.add_argument(
            name, type=kind, default=kind(default), help=f"{text} (%(default)s)"
        )


def _received(s: socket.socket) -> bytes:
    """
    What C{s} has to read: data, or C{b""} once it is closed or reset.
    """
    try:
        return s.recv(65536)
    except OSError:
        return b""


def trickle(
    address: tuple[str, int], count: int, interval: float, seconds: float, out: Any
) -> None:
    """
    (In a child process.)  Open C{count} connections; send one header byte
    on each every C{interval} seconds; record when each is closed (seconds
    after it opened) and the first line it was answered, for at most
    C{seconds}.  Sends C{"open"}, then the results, on C{out}.
    """
    head = b"GET / HTTP/1.1\r\nX-Slow: " + b"a" * 100000
    opened: dict[socket.socket, float] = {}
    answers: dict[socket.socket, bytes] = {}
    selector = selectors.DefaultSelector()
    for _ in range(count):
        s = socket.create_connection(address)
        s.setblocking(False)
        opened[s] = time.monotonic()
        answers[s] = b""
        selector.register(s, selectors.EVENT_READ)
    out.send("open")
    closedAfter: list[float] = []
    sent = 0
    start = time.monotonic()
    nextByte = start
    while opened and time.monotonic() < start + seconds:
        now = time.monotonic()
        if now >= nextByte:
            for s in opened:
                with contextlib.suppress(OSError):
                    s.send(head[sent : sent + 1])
            sent += 1
            nextByte += interval
        for key, _ in selector.select(max(0.0, min(nextByte, start + seconds) - now)):
            s = key.fileobj  # type: ignore[assignment]
            data = _received(s)
            answers[s] += data
            if not data:
                closedAfter.append(time.monotonic() - opened.pop(s))
                selector.unregister(s)
    firstLines = Counter(
        a.split(b"\r\n", 1)[0].decode("latin-1") or "(closed, no answer)"
        for a in answers.values()
    )
    out.send(
        {
            "closed_after_s": closedAfter,
            "still_open": len(opened),
            "bytes_sent_each": sent,
            "answers": dict(firstLines),
        }
    )
    for s in list(answers):
        s.close()


def scrape(
    address: tuple[str, int], scrapers: int, stop: Any, out: Any, nice: int = 19
) -> None:
    """
    (In a child process.)  Run C{scrapers} threads, each asking for
    C{/metrics} in a loop on one kept-alive connection, until C{stop} is
    set; send C{"started"}, then the counts and the scrape latencies, on
    C{out}.
    """
    os.nice(nice)
    latencies: list[float] = []
    errors = Counter[str]()
    lock = threading.Lock()

    def loop() -> None:
        host, port = address
        connection = http.client.HTTPConnection(host, port, timeout=60)
        mine: list[float] = []
        while not stop.is_set():
            started = time.monotonic()
            try:
                connection.request("GET", "/metrics")
                connection.getresponse().read()
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    errors[type(e).__name__] += 1
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=60)
                continue
            mine.append(time.monotonic() - started)
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=loop) for _ in range(scrapers)]
    started = time.monotonic()
    for t in threads:
        t.start()
    out.send("started")
    for t in threads:
        t.join()
    latencies.sort()
    if not latencies:
        latencies.append(float("nan"))
    elapsed = time.monotonic() - started
    out.send(
        {
            "scrapes": len(latencies),
            "scrapes_per_s": len(latencies) / elapsed,
            "scrape_p50_ms": latencies[len(latencies) // 2] * 1e3,
            "scrape_p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
            "errors": dict(errors),
        }
    )


def _child(harness: Harness, target: Any, *args: Any) -> tuple[Any, Connection]:
    """
    Start C{target(*args, pipe)} in a child process on the load
    generator's CPU; return the process and our end of the pipe.
    """
    ours, theirs = multiprocessing.Pipe()
    process = multiprocessing.get_context("fork").Process(
        target=target, args=(*args, theirs), daemon=True
    )
    process.start()
    if harness.clientCPU is not None:
        os.sched_setaffinity(process.pid, {harness.clientCPU})  # type: ignore[arg-type]
    return process, ours


def echoRun(harness: Harness, port: int, seconds: float, conns: int) -> dict[str, Any]:
    """
    One echo measurement: 64-byte round trips on C{conns} connections.
    """
    result = harness.loadgen(
        port,
        "--conns", str(conns), "--size", "64",
        "--duration", str(seconds), "--warmup", "0.5",
        "--sources", "8",
    )  # fmt: skip
    latency = result["latency_us"]
    return {
        "rate": result["rate"],
        "p50_us": latency["p50"],
        "p99_us": latency["p99"],
        "max_us": latency["max"],
        "errors": {k: v for k, v in result["errors"].items() if v},
    }


def scrapeMetrics(address: tuple[str, int]) -> dict[str, float]:
    """
    The daemon's C{/metrics}, as C{{series: value}}.
    """
    host, port = address
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode("utf-8")
    finally:
        connection.close()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                values[series] = float(value)
    return values


def renders(values: dict[str, float]) -> float | None:
    """
    The renders counted in C{values}, or L{None} for a daemon that does not
    count them.
    """
    found = [v for k, v in values.items() if k.startswith("netdemo_http_renders")]
    return sum(found) if found else None


def slowloris(
    harness: Harness, server: Server, http_: tuple[str, int], args: Namespace
) -> dict[str, Any]:
    """
    Phase 2: the slowloris connections, and the echo meanwhile.
    """
    window = max(args.seconds, HEADER_DEADLINE + 2)
    patience = HEADER_DEADLINE + 3 * args.trickle_interval + 10
    process, pipe = _child(
        harness, trickle, http_, args.slowloris, args.trickle_interval, patience
    )
    if pipe.poll(120) and pipe.recv() == "open":
        echo = echoRun(harness, server.port, window, args.echo_conns)
    else:
        raise RuntimeError("the slowloris connections did not open")
    outcome = pipe.recv() if pipe.poll(patience + 30) else {}
    process.join(10)
    closed = sorted(outcome.get("closed_after_s", []))
    return {
        "echo": echo,
        "connections": args.slowloris,
        "closed": len(closed),
        "still_open": outcome.get("still_open"),
        "closed_after_s_min": closed[0] if closed else None,
        "closed_after_s_max": closed[-1] if closed else None,
        "answers": outcome.get("answers", {}),
        "bytes_sent_each": outcome.get("bytes_sent_each"),
    }


def settle(http_: tuple[str, int]) -> None:
    """
    Wait (at most a minute) until the daemon has no echo connection left
    from the previous phase, so that their teardown is not measured.
    """
    series = 'netdemo_connections_current{service="tcp-echo"}'
    deadline = time.monotonic() + 60
    while scrapeMetrics(http_).get(series, 0) and time.monotonic() < deadline:
        time.sleep(0.5)


def scrapers(
    harness: Harness, server: Server, http_: tuple[str, int], args: Namespace
) -> dict[str, Any]:
    """
    Phase 3: idle echo connections held, scrapers in a loop, the echo
    meanwhile.
    """
    with harness.holding(server.port, args.idle_connections, "--sources", "8") as held:
        before = scrapeMetrics(http_)
        cpu = server.cpuSeconds()
        stop = multiprocessing.get_context("fork").Event()
        process, pipe = _child(harness, scrape, http_, args.scrapers, stop)
        started = time.monotonic()
        if not (pipe.poll(60) and pipe.recv() == "started"):
            raise RuntimeError("the scrapers did not start")
        echo = echoRun(harness, server.port, args.seconds, args.echo_conns)
        stop.set()
        outcome = pipe.recv() if pipe.poll(120) else {}
        elapsed = time.monotonic() - started
        process.join(10)
        cpu = server.cpuSeconds() - cpu
        after = scrapeMetrics(http_)
    first, last = renders(before), renders(after)
    if last is not None and first is None:
        # The first render is counted after it is served.
        first = 0.0
    return {
        "echo": echo,
        "idle_connections": held.get("served"),
        "scrapers": args.scrapers,
        **outcome,
        "renders_per_s": (last - first) / elapsed
        if first is not None and last is not None
        else None,
        "server_cpu_share": cpu / elapsed,
    }


def _tempFiles(pid: int) -> set[str]:
    """
    Deleted files process C{pid} has open (Python's temporary files are
    unlinked at once).
    """
    found = set()
    base = Path(f"/proc/{pid}/fd")
    for entry in base.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(entry)
            if target.endswith("(deleted)"):
                found.add(target)
    return found


def _writeBytes(pid: int) -> int:
    """
    Bytes process C{pid} caused to be written to storage.
    """
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def body(server: Server, http_: tuple[str, int], size: int) -> dict[str, Any]:
    """
    Phase 4: one request declaring a C{size}-byte body.  The daemon's own
    log lines are not counted in what it wrote to storage.
    """
    logged = server.log.stat().st_size
    before = _writeBytes(server.pid)
    client = socket.create_connection(http_, timeout=60)
    client.sendall(
        b"PUT /metrics HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n" % size
    )
    chunk = b"x" * (1 << 20)
    sent = 0
    seen: set[str] = set()
    started = time.monotonic()
    with contextlib.suppress(OSError):
        while sent < size:
            client.sendall(chunk[: size - sent])
            sent += min(len(chunk), size - sent)
            if sent % (64 << 20) < len(chunk):
                seen |= _tempFiles(server.pid)
    elapsed = time.monotonic() - started
    seen |= _tempFiles(server.pid)
    answer = b""
    with contextlib.suppress(OSError):
        answer = client.recv(200)
    client.close()
    return {
        "declared": size,
        "sent_before_close": sent,
        "seconds": elapsed,
        "answer": answer.split(b"\r\n", 1)[0].decode("latin-1"),
        "temporary_files": sorted(seen),
        # Page-granular: the log's own growth may round it below 0.
        "written_to_storage": max(
            0, _writeBytes(server.pid) - before - (server.log.stat().st_size - logged)
        ),
    }


def _echoCells(echo: dict[str, Any]) -> str:
    return (
        f"{echo['rate']:,.0f} | {echo['p50_us']:.0f} | {echo['p99_us']:.0f} "
        f"| {echo['max_us']:,.0f}"
    )


def section(harness: Harness, args: Namespace) -> Section:
    """
    Run the section.
    """
    spec = catalog.netdemo("netdemo", "tcp-echo", OPTIONS, "ready")
    server = harness.start(spec, log="netdemo-httpabuse")
    try:
        httpPort = listeningEvent("http")(server.log.read_text(), 0)
        assert httpPort is not None
        http_ = ("127.0.0.1", httpPort)
        time.sleep(1.0)
        data: dict[str, Any] = {}
        idleEcho = echoRun(harness, server.port, args.seconds, args.echo_conns)
        data["idle"] = {"echo": idleEcho}
        print(f"  idle: {data['idle']}", flush=True)
        data["slowloris"] = slowloris(harness, server, http_, args)
        print(f"  slowloris: {data['slowloris']}", flush=True)
        data["scrapers"] = scrapers(harness, server, http_, args)
        print(f"  scrapers: {data['scrapers']}", flush=True)
        settle(http_)
        data["body"] = body(server, http_, args.body)
        print(f"  body: {data['body']}", flush=True)
    finally:
        server.stop()
    idle, loris, scraped, sent = (
        data["idle"],
        data["slowloris"],
        data["scrapers"],
        data["body"],
    )
    ratio = loris["echo"]["p99_us"] / idle["echo"]["p99_us"]
    rendered = scraped.get("renders_per_s")
    lines = [
        f"Echo: 64-byte round trips on {args.echo_conns} connections, "
        f"{args.seconds:g} s a phase (slowloris: a window covering the header "
        "deadline).",
        "",
        "| phase | echo round trips/s | p50 µs | p99 µs | max µs | what happened |",
        "|---|--:|--:|--:|--:|---|",
        f"| idle | {_echoCells(idle['echo'])} | |",
        f"| slowloris: {loris['connections']:,} connections, a header byte every "
        f"{args.trickle_interval:g} s | {_echoCells(loris['echo'])} | closed "
        f"{loris['closed']:,} after {loris['closed_after_s_min'] or 0:.1f}-"
        f"{loris['closed_after_s_max'] or 0:.1f} s, {loris['still_open']} still open;"
        f" answers {loris['answers']}; p99 {ratio:.2f}x idle |",
        f"| {args.scrapers} /metrics scrapers, {scraped['idle_connections']:,} idle "
        f"echo connections | {_echoCells(scraped['echo'])} | "
        f"{scraped.get('scrapes_per_s', 0):,.0f} scrapes/s (p50 "
        f"{scraped.get('scrape_p50_ms') or 0:.2f} ms), renders/s "
        f"{'-' if rendered is None else f'{rendered:.1f}'}, server CPU "
        f"{scraped['server_cpu_share']:.0%} |",
        f"| PUT declaring {sent['declared']:,} bytes | | | | | the daemon took "
        f"{sent['sent_before_close']:,} bytes in {sent['seconds']:.2f} s, answered "
        f"`{sent['answer'] or '(nothing)'}`; temporary files "
        f"{len(sent['temporary_files'])}, written to storage "
        f"{sent['written_to_storage']:,} bytes |",
        "",
        f"Targets: slowloris closed at the header deadline ({HEADER_DEADLINE:g} s) "
        "with echo p99 at most 2x idle; echo p99 under "
        f"{SCRAPER_TARGET_US / 1000:g} ms with the scrapers; nothing on disk.",
    ]
    text = "\n".join(lines)
    print(text)
    return Section(
        name="httpabuse",
        title="HTTP abuse",
        markdown=text,
        data=json.loads(json.dumps(data, default=str)),
    )


if __name__ == "__main__":
    sys.exit(standalone(sys.modules[__name__]))
