"""Check the job spans a real OTLP collector (rotel, debug exporter) received from the listener.

Reads rotel's detailed debug output, groups spans by job, and requires, for at least
--min-jobs jobs: the three spans runner.queue, runner.startup and runner.execution, with the
trace id, parent span id and span ids that the id scheme derives from the job (docs/spans.md),
and the github.* attributes that name the job. Every span received must obey the scheme.
With --wait it polls the output file until this holds or the timeout passes.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SPAN_NAMES = ("runner.queue", "runner.startup", "runner.execution")
ATTEMPT = 1  # job messages carry no attempt; both schemes use 1 for "unknown"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Span:
    trace_id: str = ""
    parent_id: str = ""
    span_id: str = ""
    name: str = ""
    start: int = 0
    end: int = 0
    attributes: dict[str, str] = field(default_factory=dict)


def parse_rotel_debug(text: str) -> list[Span]:
    """Spans from rotel's `--debug-log traces --debug-log-verbosity detailed` output."""
    spans: list[Span] = []
    current: Span | None = None
    in_attributes = False
    for raw in text.splitlines():
        line = ANSI.sub("", raw).rstrip()
        stripped = line.strip()
        if re.match(r"^Span #\d+$", stripped):
            current = Span()
            spans.append(current)
            in_attributes = False
            continue
        if re.match(r"^(ResourceSpans|ScopeSpans) #\d+$", stripped):
            current = None
            continue
        if current is None:
            continue
        field_match = re.match(r"^(Trace ID|Parent ID|ID|Name)\s*:\s*(.*)$", stripped)
        if field_match and not in_attributes:
            key, value = field_match.groups()
            setattr(current, {"Trace ID": "trace_id", "Parent ID": "parent_id", "ID": "span_id",
                              "Name": "name"}[key], value.strip())
            continue
        time_match = re.match(r"^(Start|End) time:\s*(\d+)", stripped)
        if time_match:
            setattr(current, time_match.group(1).lower(), int(time_match.group(2)))
            continue
        if stripped == "Attributes:":
            in_attributes = True
            continue
        attr_match = re.match(r"^->\s*([^:]+):\s*\w+\((.*)\)$", stripped)
        if attr_match and in_attributes:
            current.attributes[attr_match.group(1).strip()] = attr_match.group(2)
            continue
        if stripped and not stripped.startswith("->"):
            in_attributes = False
    return spans


def parent_and_trace(scheme: str, run_id: str, job_id: str, job_name: str) -> tuple[str, str]:
    if scheme == "otel-explorer":
        trace = hashlib.md5(f"{run_id}-{ATTEMPT}".encode()).hexdigest()
        if job_id.isdigit():
            parent = int(job_id).to_bytes(8, "big").hex()
        else:
            parent = hashlib.md5(job_id.encode()).hexdigest()[:16]
    elif scheme == "runner-contract":
        trace = hashlib.sha256(f"{run_id}-{ATTEMPT}".encode()).hexdigest()[:32]
        parent = hashlib.sha256(f"job-{run_id}-{ATTEMPT}-{job_name}".encode()).hexdigest()[:16]
    else:
        raise SystemExit(f"unknown id scheme {scheme}")
    return trace, parent


def child_span_id(scheme: str, name: str, parent: str) -> str:
    digest = hashlib.md5 if scheme == "otel-explorer" else hashlib.sha256
    return digest(f"{name}-{parent}".encode()).hexdigest()[:16]


def self_test() -> None:
    """The worked example of protocol.md section 6, so a checker bug cannot pass silently."""
    trace, parent = parent_and_trace("otel-explorer", "12345", "67890", "build")
    assert trace == "3d7e2f2ea4fca7a337339f10a2f0954e", trace
    assert parent == "0000000000010932", parent
    assert child_span_id("otel-explorer", "runner.queue", parent) == "5c1be415b6ce8e25"


def check(spans: list[Span], scheme: str, min_jobs: int) -> tuple[list[str], int]:
    """(problems, complete jobs)."""
    problems: list[str] = []
    jobs: dict[tuple[str, str], list[Span]] = {}
    for span in spans:
        where = f"span {span.name} {span.span_id}"
        if span.name not in SPAN_NAMES:
            problems.append(f"{where}: unexpected span name")
            continue
        run_id = span.attributes.get("github.run_id", "")
        job_id = span.attributes.get("github.job_id", "")
        job_name = span.attributes.get("github.job_name", "")
        if not run_id or not job_id:
            problems.append(f"{where}: github.run_id / github.job_id missing: {span.attributes}")
            continue
        if span.attributes.get("type") != span.name:
            problems.append(f"{where}: attribute type={span.attributes.get('type')!r}")
        trace, parent = parent_and_trace(scheme, run_id, job_id, job_name)
        if span.trace_id != trace:
            problems.append(f"{where}: trace id {span.trace_id}, expected {trace} (run {run_id})")
        if span.parent_id != parent:
            problems.append(f"{where}: parent id {span.parent_id}, expected {parent} (job {job_id})")
        expected_id = child_span_id(scheme, span.name, parent)
        if span.span_id != expected_id:
            problems.append(f"{where}: span id, expected {expected_id}")
        if span.end < span.start:
            problems.append(f"{where}: ends before it starts")
        if span.name == "runner.execution" and "github.conclusion" not in span.attributes:
            problems.append(f"{where}: github.conclusion missing")
        jobs.setdefault((run_id, job_id), []).append(span)
    complete = 0
    for (run_id, job_id), job_spans in jobs.items():
        names = sorted(s.name for s in job_spans)
        if len(names) != len(set(names)):
            problems.append(f"job {run_id}/{job_id}: duplicate spans {names}")
        if set(names) == set(SPAN_NAMES):
            complete += 1
            by_name = {s.name: s for s in job_spans}
            # The three intervals are consecutive: queue ends where startup begins, etc.
            if by_name["runner.queue"].end != by_name["runner.startup"].start or \
                    by_name["runner.startup"].end != by_name["runner.execution"].start:
                problems.append(f"job {run_id}/{job_id}: spans are not consecutive")
    if complete < min_jobs:
        problems.append(f"{complete} job(s) with all three spans, {min_jobs} required")
    return problems, complete


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", required=True, help="rotel's captured stdout")
    parser.add_argument("--scheme", default="otel-explorer")
    parser.add_argument("--min-jobs", type=int, default=1)
    parser.add_argument("--wait", type=float, default=0, help="seconds to poll for success")
    args = parser.parse_args()
    self_test()
    deadline = time.monotonic() + args.wait
    while True:
        text = Path(args.output).read_text(errors="replace") if Path(args.output).exists() else ""
        spans = parse_rotel_debug(text)
        problems, complete = check(spans, args.scheme, args.min_jobs)
        if not problems:
            print(f"otel ({args.scheme}): {len(spans)} spans, {complete} job(s) with "
                  f"runner.queue/startup/execution and the expected trace, parent and span ids")
            return
        if time.monotonic() >= deadline:
            for problem in problems[:20]:
                print(f"FAIL: {problem}", file=sys.stderr)
            sys.exit(1)
        time.sleep(2)


if __name__ == "__main__":
    main()
