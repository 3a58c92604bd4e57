//! One line per check (`ok` / `FAIL ... fix: ...` / `skip`), or one JSON document.

use serde::Serialize;

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Fail,
    /// Not applicable (not configured), or not run because a check it needs failed.
    Skip,
}

/// One check's result: what was verified, or what is wrong and what to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn skip(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Skip,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn failed(&self) -> bool {
        self.status == Status::Fail
    }
}

/// Every check's result, in the order they ran.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// True when no check failed: the process exits 0 exactly then.
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(checks: Vec<Check>) -> Self {
        Self {
            ok: !checks.iter().any(Check::failed),
            checks,
        }
    }

    /// `ok   name: detail`, `FAIL name: detail; fix: ...`, `skip name: detail`, one a line.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            let label = match check.status {
                Status::Ok => "ok  ",
                Status::Fail => "FAIL",
                Status::Skip => "skip",
            };
            out.push_str(&format!(
                "{label} {}: {}",
                check.name,
                one_line(&check.detail)
            ));
            if let Some(fix) = &check.fix {
                out.push_str(&format!("; fix: {}", one_line(fix)));
            }
            out.push('\n');
        }
        let failed = self.checks.iter().filter(|c| c.failed()).count();
        if failed == 0 {
            out.push_str("all checks passed\n");
        } else {
            out.push_str(&format!("{failed} check(s) failed\n"));
        }
        out
    }

    pub fn json(&self) -> String {
        // A struct of strings, enums and bools always serializes.
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"ok\":false,\"error\":\"{e}\"}}"))
    }
}

/// Error texts may hold newlines (a server's message): keep each check on its line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_check_fails_the_report_and_each_check_is_one_line() {
        let report = Report::new(vec![
            Check::ok("config", "valid"),
            Check::fail("scale-set", "not\nfound", "set the id"),
            Check::skip("otlp", "not configured"),
        ]);
        assert!(!report.ok);
        let text = report.text();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(
            text.contains("FAIL scale-set: not found; fix: set the id"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["checks"][1]["status"], "fail");
        assert!(json["checks"][0].get("fix").is_none());
        assert!(Report::new(vec![Check::skip("otlp", "off")]).ok);
    }
}
