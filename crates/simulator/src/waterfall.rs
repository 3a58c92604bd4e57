//! A text picture of one job's trace: the demo groups the spans the built-in OTLP receiver
//! gets by trace and job, and once a job's three spans are in, prints them as a waterfall
//! scaled to the job's whole time span, so queueing, start-up and execution read at a glance.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::otlp_sink::ReceivedSpan;

/// Cells in a bar: fixed, so bars of different jobs compare by eye.
pub const BAR_WIDTH: usize = 40;

/// The spans the listener exports per completed job, in the order they happen.
pub const JOB_SPANS: [&str; 3] = ["runner.queue", "runner.startup", "runner.execution"];

/// Collects spans and hands back a rendered waterfall for each job whose three spans are in.
#[derive(Debug, Default)]
pub struct Waterfalls {
    pending: BTreeMap<(String, String), Vec<ReceivedSpan>>,
    rendered: BTreeSet<(String, String)>,
}

impl Waterfalls {
    /// Add one span; returns the job's waterfall when this span completes it. Spans of a
    /// job already rendered, duplicates and spans of other names are ignored.
    pub fn add(&mut self, span: &ReceivedSpan) -> Option<String> {
        if !JOB_SPANS.contains(&span.name.as_str()) {
            return None;
        }
        let key = (
            span.trace_id.clone(),
            span.attribute("github.job_id").unwrap_or("?").to_owned(),
        );
        if self.rendered.contains(&key) {
            return None;
        }
        let spans = self.pending.entry(key.clone()).or_default();
        if spans.iter().any(|s| s.name == span.name) {
            return None;
        }
        spans.push(span.clone());
        if spans.len() < JOB_SPANS.len() {
            return None;
        }
        let spans = self.pending.remove(&key)?;
        self.rendered.insert(key);
        Some(render_job(&spans))
    }

    /// Jobs with some but not all of their spans.
    pub fn incomplete(&self) -> usize {
        self.pending.len()
    }
}

/// Render one job's spans: a header, then a line per span in time order, each bar placed at
/// its offset from the job's first start and scaled to the job's whole time span.
pub fn render_job(spans: &[ReceivedSpan]) -> String {
    let mut spans: Vec<&ReceivedSpan> = spans.iter().collect();
    // Time order; the canonical order breaks ties so back-to-back spans stay queue-first.
    spans.sort_by_key(|s| {
        let rank = JOB_SPANS.iter().position(|n| *n == s.name);
        (s.start_unix_nanos, rank)
    });
    let job_start = spans.iter().map(|s| s.start_unix_nanos).min().unwrap_or(0);
    let job_end = spans
        .iter()
        .map(|s| s.end_unix_nanos.max(s.start_unix_nanos))
        .max()
        .unwrap_or(job_start);
    let first = spans.first();
    let attr = |key: &str| {
        first
            .and_then(|s| s.attribute(key))
            .filter(|v| !v.is_empty())
            .unwrap_or("?")
    };
    let attempt = first
        .and_then(|s| s.attribute("github.run_attempt"))
        .unwrap_or("1");
    let trace = first.map_or("", |s| s.trace_id.as_str());
    let short_trace: String = trace.chars().take(6).collect();
    // The runner request id is the number the workload's own lines use ("job 4 started");
    // the job id (a UUID in the simulator) is the fallback.
    let job = match attr("github.runner_request_id") {
        "?" => attr("github.job_id"),
        id => id,
    };
    let mut out = format!(
        "job {job} {} (run {}, attempt {attempt}) trace {short_trace}...  total {}",
        attr("github.job_name"),
        attr("github.run_id"),
        duration(job_end - job_start),
    );
    for s in spans {
        let end = s.end_unix_nanos.max(s.start_unix_nanos);
        let _ = write!(
            out,
            "\n  {:<17} |{}| {:>7}{}",
            s.name,
            bar(s.start_unix_nanos, end, job_start, job_end, BAR_WIDTH),
            duration(end - s.start_unix_nanos),
            if s.status_code == 2 { "  error" } else { "" },
        );
    }
    out
}

/// `width` cells with `█` over `[start, end)` of the window `[window_start, window_end]`.
/// Edges round to the nearest cell; a non-zero span gets at least one cell, a zero-length
/// one none.
pub fn bar(start: u64, end: u64, window_start: u64, window_end: u64, width: usize) -> String {
    let total = window_end.saturating_sub(window_start);
    let (mut from, mut to) = (0, 0);
    if total > 0 && end > start && width > 0 {
        let cell = |t: u64| -> usize {
            let offset = u128::from(t.clamp(window_start, window_end) - window_start);
            let scaled = (offset * width as u128 + u128::from(total) / 2) / u128::from(total);
            usize::try_from(scaled).unwrap_or(width).min(width)
        };
        from = cell(start);
        to = cell(end);
        if to <= from {
            // Too short to reach a cell edge: one cell, kept inside the bar.
            from = from.min(width - 1);
            to = from + 1;
        }
    }
    (0..width)
        .map(|i| if (from..to).contains(&i) { '█' } else { ' ' })
        .collect()
}

/// `3.1 s` from a second up, `250 ms` below.
fn duration(nanos: u64) -> String {
    if nanos >= 1_000_000_000 {
        format!("{:.1} s", nanos as f64 / 1e9)
    } else {
        format!("{} ms", nanos / 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const BASE: u64 = 1_700_000_000 * S;

    fn span(name: &str, start: u64, end: u64) -> ReceivedSpan {
        ReceivedSpan {
            name: name.to_owned(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
            span_id: "00f067aa0ba902b7".to_owned(),
            parent_span_id: String::new(),
            start_unix_nanos: BASE + start,
            end_unix_nanos: BASE + end,
            status_code: 1,
            attributes: vec![
                ("github.job_id".to_owned(), "1042".to_owned()),
                ("github.job_name".to_owned(), "build".to_owned()),
                ("github.run_id".to_owned(), "77".to_owned()),
            ],
            resource: Vec::new(),
        }
    }

    fn cells(bar: &str) -> (usize, usize) {
        let chars: Vec<char> = bar.chars().collect();
        let first = chars.iter().position(|c| *c == '█').unwrap_or(chars.len());
        let count = chars.iter().filter(|c| **c == '█').count();
        (first, count)
    }

    #[test]
    fn bars_scale_to_the_window_and_sit_at_their_offsets() {
        assert_eq!(cells(&bar(0, 10, 0, 40, 40)), (0, 10));
        assert_eq!(cells(&bar(10, 40, 0, 40, 40)), (10, 30));
        // Scaled: a quarter of a 4 s window is 10 of 40 cells, whatever the unit.
        assert_eq!(
            cells(&bar(BASE + S, BASE + 2 * S, BASE, BASE + 4 * S, 40)),
            (10, 10)
        );
        assert_eq!(bar(0, 40, 0, 40, 40), "█".repeat(40));
        assert_eq!(bar(0, 40, 0, 40, 40).chars().count(), 40);
    }

    #[test]
    fn edges_round_to_the_nearest_cell() {
        // 0.26 and 0.74 of 10 cells: 2.6 -> 3, 7.4 -> 7.
        assert_eq!(cells(&bar(26, 74, 0, 100, 10)), (3, 4));
        // 0.25 rounds half up: 2.5 -> 3.
        assert_eq!(cells(&bar(25, 100, 0, 100, 10)), (3, 7));
    }

    #[test]
    fn a_short_non_zero_span_gets_one_cell_and_a_zero_length_span_none() {
        assert_eq!(cells(&bar(0, 1, 0, 1000, 40)), (0, 1));
        // At the very end it stays inside the bar.
        assert_eq!(cells(&bar(999, 1000, 0, 1000, 40)), (39, 1));
        assert_eq!(bar(500, 500, 0, 1000, 40), " ".repeat(40));
        // A zero-length window (all spans zero-length) draws nothing and does not divide by 0.
        assert_eq!(bar(5, 5, 5, 5, 40), " ".repeat(40));
    }

    #[test]
    fn renders_a_job_in_time_order_with_durations() {
        let out = render_job(&[
            span("runner.queue", 0, 3_100_000_000),
            span("runner.startup", 3_100_000_000, 4_600_000_000),
            span("runner.execution", 4_600_000_000, 12_400_000_000),
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "job 1042 build (run 77, attempt 1) trace 4bf92f...  total 12.4 s"
        );
        assert_eq!(lines.len(), 4);
        let bar_of = |line: &str| {
            line.split('|')
                .nth(1)
                .map(str::to_owned)
                .unwrap_or_default()
        };
        assert!(
            lines[1].starts_with("  runner.queue      |"),
            "{}",
            lines[1]
        );
        assert!(lines[1].ends_with("|   3.1 s"), "{}", lines[1]);
        assert!(lines[3].ends_with("|   7.8 s"), "{}", lines[3]);
        // 3.1/12.4 of 40 = 10 cells; startup 10..14.8 -> 10..15; execution to the end.
        assert_eq!(cells(&bar_of(lines[1])), (0, 10));
        assert_eq!(cells(&bar_of(lines[2])), (10, 5));
        assert_eq!(cells(&bar_of(lines[3])), (15, 25));
    }

    #[test]
    fn the_header_prefers_the_runner_request_id_and_reads_the_attempt() {
        let spans: Vec<ReceivedSpan> = JOB_SPANS
            .iter()
            .map(|n| {
                let mut s = span(n, 0, S);
                s.attributes
                    .push(("github.runner_request_id".to_owned(), "4".to_owned()));
                s.attributes
                    .push(("github.run_attempt".to_owned(), "2".to_owned()));
                s
            })
            .collect();
        let out = render_job(&spans);
        assert!(
            out.starts_with("job 4 build (run 77, attempt 2) trace 4bf92f...  total 1.0 s"),
            "{out}"
        );
    }

    #[test]
    fn a_job_renders_once_its_three_spans_arrive_in_any_order() {
        let mut w = Waterfalls::default();
        assert_eq!(w.add(&span("runner.execution", 2 * S, 5 * S)), None);
        assert_eq!(w.add(&span("runner.queue", 0, S)), None);
        assert_eq!(w.add(&span("runner.queue", 0, S)), None, "a duplicate");
        assert_eq!(w.incomplete(), 1);
        let out = w.add(&span("runner.startup", S, 2 * S));
        let out = out.unwrap_or_default();
        let names: Vec<&str> = out
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(names, JOB_SPANS);
        assert_eq!(w.incomplete(), 0);
        // Late spans of a rendered job do not start it again.
        assert_eq!(w.add(&span("runner.queue", 0, S)), None);
        assert_eq!(w.incomplete(), 0);
    }

    #[test]
    fn jobs_are_told_apart_by_trace_and_job_id_and_short_spans_show_ms() {
        let mut w = Waterfalls::default();
        let mut other = span("runner.queue", 0, 250_000_000);
        other.trace_id = "ffff".repeat(8);
        assert_eq!(w.add(&other), None);
        assert_eq!(w.add(&span("runner.queue", 0, 250_000_000)), None);
        assert_eq!(w.add(&span("runner.startup", 250_000_000, S)), None);
        let out = w.add(&span("runner.execution", S, S)).unwrap_or_default();
        assert_eq!(w.incomplete(), 1);
        assert!(out.contains("runner.queue      |"), "{out}");
        assert!(
            out.lines().nth(1).is_some_and(|l| l.ends_with("|  250 ms")),
            "{out}"
        );
        // The zero-length execution draws no cells.
        let exec = out.lines().nth(3).unwrap_or_default();
        assert_eq!(exec.split('|').nth(1), Some(" ".repeat(BAR_WIDTH).as_str()));
        assert!(exec.ends_with("|    0 ms"), "{exec}");
    }
}
