"""First load of the static classroom edition over a school network: cold cache, throttled in Chromium.

    .venv/bin/attnlab site /tmp/classroom
    .venv/bin/python benchmarks/bench_site_load.py /tmp/classroom [--mbit 10] [--latency-ms 40] [--loads 5]

Serves the exported folder with Python's own static file server (``http.server``, as a teacher might),
opens ``index.html`` in Debian's Chromium in a fresh browser context each time (an empty cache; the
cache is also disabled over CDP), with the network emulated over CDP (``Network.emulateNetworkConditions``:
``--mbit`` Mbit/s down and up, ``--latency-ms`` added to each request's round trip), and times two
moments from navigation: the page ready (``body[data-ready=true]``: modules, model list and the tour's
first step drawn) and the first tour step's widget ready with its computed text. Prints the median
and every load, and the bytes the page fetched (response bodies, as Chromium counts them). The machine
may be shared: quote medians.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import statistics
import threading
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def one_load(browser: object, url: str, mbit: float, latency_ms: float) -> dict[str, float]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    rate = mbit * 1e6 / 8  # bytes per second
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": latency_ms,
                                                  "downloadThroughput": rate, "uploadThroughput": rate})
    received = []
    cdp.on("Network.loadingFinished", lambda e: received.append(e.get("encodedDataLength", 0)))
    start = time.perf_counter()
    page.goto(f"{url}/index.html#tour/1")
    page.wait_for_selector("body[data-ready=true]", timeout=300_000)
    ready = time.perf_counter() - start
    page.wait_for_selector("#view-tour[data-step='1'] .tour-widget[data-state=ready]", timeout=300_000)
    page.wait_for_selector("#view-tour[data-step='1'] .tour-text[data-claims=ready]", timeout=300_000)
    step = time.perf_counter() - start
    context.close()
    return {"ready_s": ready, "first_step_s": step, "bytes": float(sum(received))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a folder written by `attnlab site`")
    parser.add_argument("--mbit", type=float, default=10.0, help="emulated bandwidth, Mbit/s each way (default 10)")
    parser.add_argument("--latency-ms", type=float, default=40.0, help="emulated round-trip latency in ms (default 40)")
    parser.add_argument("--loads", type=int, default=5, help="cold loads to time (default 5)")
    args = parser.parse_args()
    if not (args.folder / "site.json").is_file():
        parser.error(f"{args.folder} holds no site.json: write it with `attnlab site {args.folder}` first")
    from playwright.sync_api import sync_playwright

    server, url = serve(args.folder)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            loads = [one_load(browser, url, args.mbit, args.latency_ms) for _ in range(args.loads)]
            browser.close()
    finally:
        server.shutdown()
    site_mb = sum(f.stat().st_size for f in args.folder.rglob("*") if f.is_file()) / 2**20
    result = {
        "network": f"{args.mbit:g} Mbit/s, {args.latency_ms:g} ms", "site_mb": round(site_mb, 1),
        "ready_s_median": round(statistics.median(x["ready_s"] for x in loads), 2),
        "first_step_s_median": round(statistics.median(x["first_step_s"] for x in loads), 2),
        "fetched_kb_median": round(statistics.median(x["bytes"] for x in loads) / 1024),
        "loads": [{k: round(v, 2) for k, v in x.items()} for x in loads],
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
