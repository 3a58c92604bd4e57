//! What every driver of the real `ghalistener` binary needs, in one place: the listener's
//! integration tests, the benchmark and `gha-simulator demo` start the binary with a clean
//! environment, stop it with SIGTERM as the kubelet does, pick free loopback ports, wait for
//! conditions with a bound, and read the listener's HTTP endpoints.
//!
//! Like the fakes, this module knows the listener only from the outside (its environment
//! variables, its signals, its HTTP endpoints), never through its crates.

use std::ffi::OsStr;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use tokio::process::{Child, Command};

use crate::otlp_sink::OtlpSink;
use crate::workload::{Environment, EnvironmentOptions};

/// Inherited variables that would change what the listener does (log filter, config and
/// cluster discovery, proxies in front of the fakes): a run must depend only on what its
/// driver sets.
const INHERITED: &[&str] = &[
    "RUST_LOG",
    "LISTENER_CONFIG_PATH",
    "KUBECONFIG",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "SSL_CERT_FILE",
];

/// Inherited variable families removed likewise: OpenTelemetry's own settings (an inherited
/// exporter endpoint would send spans elsewhere), the listener's test knobs and the Azure
/// identity variables (workload identity).
const INHERITED_PREFIXES: &[&str] = &["OTEL_", "GHALISTENER_", "AZURE_"];

/// How long a plain GET may take before it counts as unanswered.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// `binary` as a command with a clean environment: the inherited variables that steer the
/// listener are removed (set them again on the command as needed), and the child is
/// killed if its handle is dropped, so a failed test leaves no listener behind.
pub fn listener_command(binary: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(binary);
    for name in INHERITED {
        command.env_remove(name);
    }
    for (name, _) in std::env::vars_os() {
        let steering = name
            .to_str()
            .is_some_and(|n| INHERITED_PREFIXES.iter().any(|p| n.starts_with(p)));
        if steering {
            command.env_remove(&name);
        }
    }
    command.kill_on_drop(true);
    command
}

/// [`listener_command`] pointed at `env`'s `config.json` and kubeconfig.
pub fn environment_command(binary: impl AsRef<OsStr>, env: &Environment) -> Command {
    let mut command = listener_command(binary);
    command
        .env("LISTENER_CONFIG_PATH", &env.config_path)
        .env("KUBECONFIG", &env.kubeconfig_path);
    command
}

/// How a SIGTERM ended.
#[derive(Debug, Clone, Copy)]
pub struct Termination {
    /// The exit status; `None` when the process did not exit in time and was killed.
    pub exit: Option<ExitStatus>,
    /// From the signal to the exit (or to the kill).
    pub took: Duration,
}

impl Termination {
    /// The exit code; `None` when killed (by us or by a signal).
    pub fn code(&self) -> Option<i32> {
        self.exit.and_then(|s| s.code())
    }
}

/// A running listener (or any binary started by [`listener_command`]) and its log.
#[derive(Debug)]
pub struct ListenerProcess {
    child: Child,
    pid: u32,
    spawned_at: SystemTime,
    log: PathBuf,
}

impl ListenerProcess {
    /// `binary` against `env`, stdout and stderr both in `env.dir()/listener.log`.
    pub fn spawn(binary: impl AsRef<OsStr>, env: &Environment) -> io::Result<Self> {
        Self::spawn_with::<&str, &str>(binary, env, &[])
    }

    /// As [`Self::spawn`], with extra environment variables.
    pub fn spawn_with<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        binary: impl AsRef<OsStr>,
        env: &Environment,
        extra_env: &[(K, V)],
    ) -> io::Result<Self> {
        let mut command = environment_command(binary, env);
        for (k, v) in extra_env {
            command.env(k, v);
        }
        Self::start(command, &env.dir().join("listener.log"), None)
    }

    /// Start `command` with stdout in `log` and stderr in `stderr`, or in `log` too.
    pub fn start(mut command: Command, log: &Path, stderr: Option<&Path>) -> io::Result<Self> {
        let out = std::fs::File::create(log)?;
        let err = match stderr {
            Some(path) => std::fs::File::create(path)?,
            None => out.try_clone()?,
        };
        let spawned_at = SystemTime::now();
        let child = command
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()?;
        // A child just spawned and not yet waited for always has its pid.
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("spawned child has no pid"))?;
        Ok(Self {
            child,
            pid,
            spawned_at,
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn spawned_at(&self) -> SystemTime {
        self.spawned_at
    }

    /// Where stdout goes (and stderr, unless it was given a file of its own).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The log so far ("" when unreadable).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn tail(&self, lines: usize) -> String {
        let text = self.output();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The exit status once the process has exited, without waiting.
    pub fn try_exit(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Wait for the exit, however long it takes.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Wait up to `timeout` for the exit; `None` when still running.
    pub async fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// SIGTERM, as the kubelet sends it, then up to `timeout` for the exit; killed when it
    /// does not exit in time (then [`Termination::exit`] is `None`).
    pub async fn terminate(&mut self, timeout: Duration) -> io::Result<Termination> {
        let sent = Instant::now();
        sigterm(self.pid).await?;
        let exit = self.wait_timeout(timeout).await?;
        if exit.is_none() {
            self.child.start_kill()?;
            let _ = self.child.wait().await;
        }
        Ok(Termination {
            exit,
            took: sent.elapsed(),
        })
    }
}

/// Send SIGTERM to `pid`. Through `kill(1)`: the workspace forbids `unsafe`, and one child
/// process per stop costs nothing next to what a test or a benchmark run does.
pub async fn sigterm(pid: u32) -> io::Result<()> {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .await?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("kill -TERM {pid}: {status}")))
    }
}

/// A free loopback port below the kernel's ephemeral range (32768+), so that the many
/// outgoing connections of a scenario cannot take it between this check and the
/// listener's bind. Processes start at different points of the range (by pid), and each
/// call moves on, so concurrent tests do not pick the same port.
pub fn free_addr() -> io::Result<SocketAddr> {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = u16::try_from(std::process::id() % 500).unwrap_or(0) * 20;
    for _ in 0..SPAN {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % SPAN;
        let port = FIRST + (seed + offset) % SPAN;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr();
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no free loopback port in {FIRST}..{}", FIRST + SPAN),
    ))
}

/// An [`Environment`] in `dir` with every output on ([`EnvironmentOptions::observed`]):
/// metrics on a free port, spans to a new [`OtlpSink`], returned with it to be kept and read.
pub async fn observed_environment(dir: &Path) -> anyhow::Result<(Environment, OtlpSink)> {
    let sink = OtlpSink::start().await?;
    let options = EnvironmentOptions::observed(dir, free_addr()?, sink.endpoint());
    let env = Environment::start(options).await?;
    Ok((env, sink))
}

/// Poll `check` every 50 ms until it holds or `timeout` passes; its last answer.
pub async fn wait_until(timeout: Duration, check: impl FnMut() -> bool) -> bool {
    wait_until_every(timeout, Duration::from_millis(50), check).await
}

/// Poll `check` every `interval` until it holds or `timeout` passes; its last answer.
pub async fn wait_until_every(
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(interval).await;
    }
    check()
}

/// A plain HTTP/1.0 GET on loopback (the fakes' crate has no HTTP client): the whole
/// response (status line, headers, body), or "" when the server cannot be reached or does
/// not answer within 10 s.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        io::Result::Ok(response)
    };
    match tokio::time::timeout(HTTP_TIMEOUT, exchange).await {
        Ok(Ok(response)) => response,
        _ => String::new(),
    }
}

/// The body of a response [`http_get`] returned ("" when there is none).
pub fn http_body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// Whether a response [`http_get`] returned has status 200.
pub fn http_ok(response: &str) -> bool {
    response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")
}

/// The sum of every series of metric `name` in a Prometheus text exposition.
pub fn metric_value(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The runtime a driver's `main` runs on: two workers, as on the two-core machine the
/// benchmark describes, so the drivers and the listener see the same scheduling. `None`
/// after saying on stderr, as `program`, why it could not start.
pub fn driver_runtime(program: &str) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("{program}: cannot start the runtime: {e}");
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn metric_value_sums_series_of_that_name_only() {
        let text = "# HELP x\nx_total{a=\"1\"} 2\nx_total{a=\"2\"} 3\nx_total_other 7\nx_total 1\n";
        assert_eq!(metric_value(text, "x_total"), 6.0);
        assert_eq!(metric_value(text, "missing"), 0.0);
    }

    #[test]
    fn free_addrs_are_distinct_and_below_the_ephemeral_range() {
        // Not re-bound here: a port free when probed can be taken by another process on the
        // machine before a second bind (seen while other test runs shared the machine), so
        // only what `free_addr` itself guarantees is asserted.
        let a = free_addr().unwrap();
        let b = free_addr().unwrap();
        assert_ne!(a, b);
        for addr in [a, b] {
            assert!(addr.port() >= 20_000 && addr.port() < 32_000, "{addr}");
        }
    }

    #[test]
    fn the_command_drops_steering_variables_and_keeps_what_is_set() {
        let command = listener_command("true");
        let removed: Vec<_> = command
            .as_std()
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert!(removed.iter().any(|k| k == "RUST_LOG"), "{removed:?}");
        assert!(removed.iter().any(|k| k == "KUBECONFIG"), "{removed:?}");
        let mut command = listener_command("true");
        command.env("RUST_LOG", "debug");
        let rust_log = command
            .as_std()
            .get_envs()
            .find(|(k, _)| *k == "RUST_LOG")
            .and_then(|(_, v)| v);
        assert_eq!(rust_log, Some(OsStr::new("debug")));
    }

    #[tokio::test]
    async fn sigterm_stops_a_child_and_reports_its_exit() {
        let dir = std::env::temp_dir().join(format!("support-sigterm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut command = listener_command("sleep");
        command.arg("30");
        let mut process = ListenerProcess::start(command, &dir.join("log"), None).unwrap();
        assert!(process.try_exit().unwrap().is_none());
        let stopped = process.terminate(Duration::from_secs(10)).await.unwrap();
        assert!(stopped.exit.is_some(), "not stopped by SIGTERM");
        assert_eq!(stopped.code(), None, "sleep dies of the signal");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
