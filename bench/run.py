"""`make bench`: the gateway's performance against its targets (issue 5).

    python -m bench.run [--quick | --smoke] [--repeat N] [--only backlog,live,...]

Starts its own Mosquitto and gateway (fresh temporary directories, 127.0.0.1
only), runs each scenario, prints one table (figure, gate, aim, verdict), and
writes bench/results/<stamp>.json, bench/results/latest.json and
bench/results/latest.png. With --repeat N every scenario runs N times and the
table shows the median of each figure (the machine is noisy: FIELD-NOTES).
--quick (CI) and --smoke (the test suite) run every scenario small and judge
nothing: their figures are not comparable with the targets. A full run exits
with status 3 when a gate is missed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from bench import chart
from bench.scenarios import FULL, QUICK, SCENARIOS, SMOKE, Context, Metric

RESULTS = Path(__file__).resolve().parent / "results"
EXIT_GATE_MISSED = 3


def verdict(m: Metric, judged: bool) -> str:
    if m.value is None:
        return "no figure" if m.gate is not None else ""
    if m.gate is None:
        return ""
    if not judged:
        return "(not judged)"

    def meets(target: float) -> bool:
        return m.value >= target if m.better == "higher" else m.value <= target

    if m.aim is not None and meets(m.aim):
        return "pass"
    if meets(m.gate):
        return "pass gate, miss aim"
    return "MISS"


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.2f} x"
    if abs(value) >= 1000:
        return f"{value:,.0f} {unit}"
    if abs(value) >= 100:
        return f"{value:.0f} {unit}"
    return f"{value:.3g} {unit}" if unit != "s" else f"{value:.3f} s"


def target(value: float | None, m: Metric) -> str:
    if value is None:
        return "-"
    sign = ">=" if m.better == "higher" else "<="
    return f"{sign} {fmt(value, m.unit)}"


def combine(runs: list[list[Metric]]) -> list[dict]:
    """One row per metric: the median over the repeats, and every value."""
    order: list[str] = []
    by_key: dict[str, list[Metric]] = {}
    for metrics in runs:
        for m in metrics:
            if m.key not in by_key:
                order.append(m.key)
                by_key[m.key] = []
            by_key[m.key].append(m)
    rows = []
    for key in order:
        ms = by_key[key]
        values = [m.value for m in ms if m.value is not None]
        first = ms[0]
        median = round(statistics.median(values), 3) if values else None
        rows.append({"metric": Metric(first.scenario, first.name, median, first.unit, first.gate, first.aim,
                                      first.better, first.note if len(ms) == 1 else f"median of {len(values)}; {first.note}"),
                     "values": [m.value for m in ms]})
    return rows


def table(rows: list[dict], judged: bool) -> str:
    head = ("scenario", "metric", "figure", "gate", "aim", "result", "notes")
    lines = []
    for r in rows:
        m: Metric = r["metric"]
        notes = m.note
        if len(r["values"]) > 1:
            notes = "runs: " + ", ".join(fmt(v, m.unit) for v in r["values"]) + ("; " + m.note.split("; ", 1)[-1] if m.note else "")
        lines.append((m.scenario, m.name, fmt(m.value, m.unit), target(m.gate, m), target(m.aim, m), verdict(m, judged),
                      notes))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    widths[-1] = len(head[-1])
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in lines]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="every scenario small (CI); no thresholds judged")
    mode.add_argument("--smoke", action="store_true", help="every scenario tiny (the test suite); nothing judged")
    parser.add_argument("--repeat", type=int, default=None,
                        help="run every scenario N times and report medians (default 3; 1 with --quick or --smoke)")
    parser.add_argument("--only", default="", help=f"comma-separated scenarios of {', '.join(SCENARIOS)}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory of the JSON and PNG results")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories (logs, databases)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a gateway setting for every gateway started (e.g. max_unacked=100000): for "
                             "tuning experiments; recorded in the results")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)

    sizes, mode_name = (QUICK, "quick") if args.quick else (SMOKE, "smoke") if args.smoke else (FULL, "full")
    judged = mode_name == "full"
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    if args.repeat is None:
        args.repeat = 3 if mode_name == "full" else 1
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    overrides: dict[str, str] = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            parser.error(f"--set expects NAME=VALUE, got {item!r}")
        overrides[name.strip().lower().removeprefix("autocore_")] = value.strip()

    started = time.time()
    load_before = os.getloadavg()

    def log(text: str) -> None:
        if not args.quiet:
            print(f"[{time.time() - started:6.1f} s] {text}", file=sys.stderr, flush=True)

    runs: list[list[Metric]] = []
    details: dict[str, list] = {n: [] for n in names}
    failures: list[str] = []
    for r in range(args.repeat):
        metrics: list[Metric] = []
        for name in names:
            log(f"run {r + 1}/{args.repeat}: {name}")
            ctx = Context(sizes, log, repeat_index=r, keep=args.keep, settings=overrides)
            t = time.time()
            try:
                outcome = SCENARIOS[name](ctx)
                metrics += outcome.metrics
                details[name].append(outcome.details | {"seconds": round(time.time() - t, 1)})
            except Exception as exc:
                failures.append(f"{name} (run {r + 1}): {type(exc).__name__}: {exc}")
                details[name].append({"error": traceback.format_exc()})
                log(f"{name} failed: {exc}")
            finally:
                ctx.close()
                if args.keep:
                    log(f"{name}: files kept in {ctx.root}")
        runs.append(metrics)

    rows = combine(runs)
    text = table(rows, judged)
    title = f"AutoCore Gateway benchmark, {mode_name} run, {args.repeat} repeat(s), {os.cpu_count()} cores"
    load_after = os.getloadavg()
    subtitle = (f"{time.time() - started:.0f} s, load average {load_before[0]:.1f} before / {load_after[0]:.1f} after, "
                f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    if overrides:
        subtitle += ", settings " + " ".join(f"{k}={v}" for k, v in overrides.items())
    header = f"{title}, {subtitle}"
    print(header)
    print(text)
    if not judged:
        print(f"({mode_name} run: small sizes, figures not comparable with the targets; nothing judged)")
    for f in failures:
        print(f"FAILED: {f}")

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    result = {
        "mode": mode_name, "repeat": args.repeat, "started": started, "seconds": round(time.time() - started, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "loadavg_before": load_before, "loadavg_after": load_after},
        "sizes": dataclasses.asdict(sizes), "settings": overrides,
        "results": [{"scenario": r["metric"].scenario, "metric": r["metric"].name, "value": r["metric"].value,
                     "unit": r["metric"].unit, "gate": r["metric"].gate, "aim": r["metric"].aim,
                     "better": r["metric"].better, "verdict": verdict(r["metric"], judged), "values": r["values"],
                     "note": r["metric"].note}
                    for r in rows],
        "details": details,
        "failures": failures,
        "table": text,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for path in (args.out / f"{mode_name}-{stamp}.json", args.out / f"latest-{mode_name}.json"):
        path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    png = args.out / f"latest-{mode_name}.png"
    chart.write_chart(png, [r["metric"] for r in rows], title, judged, subtitle)
    print(f"results: {args.out / f'latest-{mode_name}.json'} ({stamp}), chart: {png}")

    if failures:
        return 1
    if judged and any(verdict(r["metric"], judged) in ("MISS", "no figure") for r in rows):
        return EXIT_GATE_MISSED
    return 0


if __name__ == "__main__":
    sys.exit(main())
