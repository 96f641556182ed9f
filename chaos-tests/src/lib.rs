//! `rota_chaos`: run the real rota binaries as separate processes, inject
//! faults, and check what the cluster does.
//!
//! [`Cluster`] starts `rota-server` processes on loopback with free ports and
//! their own data directories, kills them on drop, and offers the process
//! faults the tests need: SIGKILL, SIGTERM, restart on the same data dir, and
//! a fresh server to add. Network, clock and disk faults come with the
//! chaos issue (#6).
//!
//! The binaries are found next to the test executable (`target/<profile>/`),
//! or in `$ROTA_BIN_DIR`; `cargo test --workspace` builds them.
//!
//! Clusters are heavy on a two-core machine, so [`Cluster::start`] first
//! takes a process-wide lock: tests of one binary run their clusters one at a
//! time even when the harness runs tests in parallel.

pub mod bench;
pub mod docker;
pub mod oracle;
pub mod otlp;
pub mod protocol;
pub mod proxy;
pub mod record;
pub mod scenarios;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rota_client::{Client, ClientOptions, proto as pb};
use tokio::sync::{Mutex, MutexGuard};

/// Serializes clusters within one test process.
static EXCLUSIVE: Mutex<()> = Mutex::const_new(());

/// The directory holding the built binaries.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ROTA_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test-exe> → target/<profile>
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The path of a built binary; fails with what to do if it is missing.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir().join(name);
    if !path.exists() {
        bail!(
            "{} not found; build the binaries first (cargo build --workspace --bins) or set ROTA_BIN_DIR",
            path.display()
        );
    }
    Ok(path)
}

/// Ports handed out so far by this process, to start each search elsewhere.
static PORTS_TAKEN: AtomicU32 = AtomicU32::new(0);

/// A free loopback port for a server to bind.
///
/// Chosen below the kernel's ephemeral range (32768 and up by default), so
/// that between this check and the server's bind no outgoing connection of
/// the test (a peer channel, a client) can be given the same port as its
/// source port. Successive calls, and different test processes, start their
/// search at different places.
pub fn free_port() -> anyhow::Result<u16> {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let start = std::process::id().wrapping_mul(7919) + PORTS_TAKEN.fetch_add(1, Ordering::Relaxed) * 101;
    for step in 0..SPAN {
        let port = u16::try_from(LOW + (start + step) % SPAN)?;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port between {LOW} and {}", LOW + SPAN)
}

/// Runs `test` against `cluster`; on an error prints every log tail and
/// panics with the error (the shape of a cluster test).
pub async fn run_checked(cluster: &mut Cluster, test: impl AsyncFnOnce(&mut Cluster) -> anyhow::Result<()>) {
    if let Err(e) = test(cluster).await {
        cluster.dump_logs();
        panic!("{e:#}");
    }
}

/// `GET path` from the HTTP endpoint at `addr` (plain HTTP/1.0, enough for
/// rota's `/metrics`, `/healthz`, `/readyz`): the status code and body.
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr}"))??;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .with_context(|| format!("reading {path} from {addr}"))??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status line from {addr}{path}: {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// The samples of a Prometheus text exposition, `name{labels}` → value.
pub fn metric_samples(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The samples of `/metrics` at `addr`.
pub async fn scrape(addr: &str) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
    let (status, text) = http_get(addr, "/metrics").await?;
    anyhow::ensure!(status == 200, "{addr}/metrics answered {status}: {text}");
    Ok(metric_samples(&text))
}

/// Debian's libfaketime (the thread-safe variant), if installed.
pub fn faketime_library() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|path| path.exists())
}

/// Polls `check` until it yields `Some`, or fails after `timeout` with
/// `what` and the last observation.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "condition not met yet".to_owned(),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Settings passed to every server of a cluster.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `raft.snapshot_every_logs`.
    pub snapshot_every_logs: u64,
    /// `raft.keep_logs_after_snapshot`.
    pub keep_logs_after_snapshot: u64,
    /// More `ROTA_*` settings, e.g. `("ROTA_WORKER_LEASE", "2s")`.
    pub env: Vec<(String, String)>,
    /// Route every server-to-server link of the founding servers through
    /// a proxy of the harness, one per direction, so that links can be cut
    /// ([`Cluster::partition`], [`Cluster::cut_link`]) and healed.
    pub link_proxies: bool,
    /// Start every server under libfaketime (Debian's `faketime`), each
    /// with a wall-clock offset the test sets ([`Cluster::set_clock_offset`]);
    /// monotonic clocks stay true.
    pub skewable_clocks: bool,
    /// Give every server an HTTP endpoint (`--http-listen`, a free loopback
    /// port; [`Server::http_addr`]) for `/metrics`, `/healthz`, `/readyz`.
    pub http: bool,
    /// Mutual TLS and tokens: servers get the files and the bootstrap
    /// token, the harness's clients a client certificate and that token.
    pub security: Option<Security>,
    /// How long [`Cluster::start`] waits for a leader (a restore of a large
    /// backup takes longer than the usual 30 s).
    pub start_timeout: Duration,
}

/// The credentials of a secured cluster, as `rotactl tls init` makes them.
#[derive(Debug, Clone)]
pub struct Security {
    /// Where the files are.
    pub dir: PathBuf,
    /// The bootstrap (admin) token.
    pub bootstrap_token: String,
    /// The cluster's CA, to sign more certificates with.
    pub authority: std::sync::Arc<rota_client::certs::Authority>,
}

impl Security {
    /// Makes a CA, per-role certificates and a bootstrap token in `dir`.
    pub fn create(dir: &Path) -> anyhow::Result<Security> {
        let token = rota_client::token::new_secret().map_err(|_| anyhow::anyhow!("no randomness"))?;
        let files = rota_client::certs::init_cluster(dir, &[], Duration::from_secs(24 * 3600), &token)?;
        Ok(Security {
            dir: dir.to_owned(),
            bootstrap_token: token,
            authority: std::sync::Arc::new(files.authority),
        })
    }

    /// The files of `role`.
    pub fn files(&self, role: rota_client::tls::Role) -> rota_client::TlsFiles {
        rota_client::certs::role_files(&self.dir, role)
    }

    fn tls_env(&self, role: rota_client::tls::Role) -> Vec<(String, String)> {
        let files = self.files(role);
        vec![
            ("ROTA_TLS__CA_FILE".into(), files.ca_file.display().to_string()),
            ("ROTA_TLS__CERT_FILE".into(), files.cert_file.display().to_string()),
            ("ROTA_TLS__KEY_FILE".into(), files.key_file.display().to_string()),
        ]
    }

    /// What a server is given.
    pub fn server_env(&self) -> Vec<(String, String)> {
        let mut env = self.tls_env(rota_client::tls::Role::Server);
        env.push(("ROTA_AUTH__ENABLED".into(), "true".into()));
        env.push((
            "ROTA_AUTH__WORKER_TOKEN_FILE".into(),
            self.dir.join("worker.token").display().to_string(),
        ));
        env.push((
            "ROTA_SECRETS__KEY_FILE".into(),
            self.dir.join("secrets.key").display().to_string(),
        ));
        env.push((
            "ROTA_AUTH__BOOTSTRAP_TOKEN_FILE".into(),
            self.dir.join("bootstrap.token").display().to_string(),
        ));
        env
    }

    /// What a worker is given: its certificate and the token in `token_file`.
    pub fn worker_env(&self, token_file: &Path) -> Vec<(String, String)> {
        let mut env = self.tls_env(rota_client::tls::Role::Worker);
        env.push(("ROTA_TOKEN_FILE".into(), token_file.display().to_string()));
        env
    }

    /// Test client options with a client certificate and `token`.
    pub fn client_options(&self, token: Option<&str>) -> ClientOptions {
        ClientOptions {
            tls: Some(self.files(rota_client::tls::Role::Client)),
            token: token.map(str::to_owned),
            ..test_client_options()
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            snapshot_every_logs: 10_000,
            keep_logs_after_snapshot: 1_000,
            env: Vec::new(),
            link_proxies: false,
            skewable_clocks: false,
            http: false,
            security: None,
            start_timeout: Duration::from_secs(30),
        }
    }
}

/// A child process of the harness with its log file.
#[derive(Debug)]
pub struct Process {
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    fn new(log: PathBuf) -> Self {
        Self { log, child: None }
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Spawns `command` with its output appended to the log.
    fn spawn(&mut self, mut command: Command) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        self.child = Some(command.spawn().with_context(|| format!("starting {command:?}"))?);
        Ok(())
    }

    /// Sends `signal`.
    pub fn signal(&mut self, signal: Signal) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("the process is not running")?;
        let pid = Pid::from_raw(i32::try_from(child.id())?);
        kill(pid, signal).with_context(|| format!("sending {signal}"))
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::SIGKILL)?;
        if let Some(mut child) = self.child.take() {
            child.wait()?;
        }
        Ok(())
    }

    /// Waits (bounded) for the process to exit by itself; returns its status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().context("the process is not running")?;
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("the process did not exit within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One server process.
#[derive(Debug)]
pub struct Server {
    /// Its node id.
    pub id: u64,
    /// Its gRPC address.
    pub addr: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its HTTP endpoint, with [`ServerSettings::http`].
    pub http_addr: Option<String>,
    /// `--initial-cluster`, for founding members.
    initial_cluster: Option<String>,
    /// The process.
    pub process: Process,
}

/// Options of a worker the harness starts.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// `--id`.
    pub id: String,
    /// `--drivers`, e.g. `"exec"` or `"docker"`.
    pub drivers: String,
    /// `--slots`.
    pub slots: u32,
    /// `--labels`, e.g. `"pool=ci"` (empty: none).
    pub labels: String,
    /// Servers it is given; `None`: every server of the cluster.
    pub servers: Option<Vec<String>>,
    /// More environment, e.g. `("RUST_LOG", "debug")`.
    pub env: Vec<(String, String)>,
    /// Give it an HTTP endpoint (`--http-listen`, a free loopback port kept
    /// across restarts; [`Worker::http_addr`]).
    pub http: bool,
}

impl WorkerSettings {
    /// A worker `id` with `drivers` and two slots.
    pub fn new(id: &str, drivers: &str) -> Self {
        Self {
            id: id.to_owned(),
            drivers: drivers.to_owned(),
            slots: 2,
            labels: String::new(),
            servers: None,
            env: Vec::new(),
            http: false,
        }
    }
}

/// One `rota-worker` process.
#[derive(Debug)]
pub struct Worker {
    /// Its settings.
    pub settings: WorkerSettings,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The process.
    pub process: Process,
    /// Its HTTP endpoint, with [`WorkerSettings::http`].
    pub http_addr: Option<String>,
}

/// A cluster of real `rota-server` processes.
pub struct Cluster {
    dir: tempfile::TempDir,
    servers: BTreeMap<u64, Server>,
    workers: BTreeMap<String, Worker>,
    settings: ServerSettings,
    /// Per-server environment on top of `settings.env`.
    server_env: BTreeMap<u64, Vec<(String, String)>>,
    /// `(from, to)` → the proxy server `from` dials to reach `to`.
    links: BTreeMap<(u64, u64), proxy::Proxy>,
    binary: PathBuf,
    _exclusive: MutexGuard<'static, ()>,
}

impl Cluster {
    /// Starts `size` founding servers (ids 1..=size) and waits for a leader.
    pub async fn start(size: u64, settings: ServerSettings) -> anyhow::Result<Cluster> {
        let exclusive = EXCLUSIVE.lock().await;
        let binary = binary("rota-server")?;
        let dir = tempfile::Builder::new().prefix("rota-cluster-").tempdir()?;
        let mut addrs = BTreeMap::new();
        for id in 1..=size {
            addrs.insert(id, format!("127.0.0.1:{}", free_port()?));
        }
        let initial_cluster = addrs
            .iter()
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut links = BTreeMap::new();
        if settings.link_proxies {
            for &from in addrs.keys() {
                for (&to, addr) in &addrs {
                    if from != to {
                        links.insert((from, to), proxy::Proxy::start(addr).await?);
                    }
                }
            }
        }
        let mut cluster = Cluster {
            servers: BTreeMap::new(),
            workers: BTreeMap::new(),
            settings,
            server_env: BTreeMap::new(),
            links,
            binary,
            _exclusive: exclusive,
            dir,
        };
        for (&id, addr) in &addrs {
            let server = cluster.new_server(id, addr.clone(), Some(initial_cluster.clone()))?;
            cluster.servers.insert(id, server);
        }
        if cluster.settings.skewable_clocks {
            let library = faketime_library().context(
                "skewable clocks need libfaketime: install Debian's faketime package (apt-get install faketime)",
            )?;
            for &id in addrs.keys() {
                cluster.set_clock_offset(id, 0)?;
                let file = cluster.clock_file(id);
                cluster.set_server_env(id, "LD_PRELOAD", Some(&library.to_string_lossy()));
                cluster.set_server_env(id, "FAKETIME_TIMESTAMP_FILE", Some(&file.to_string_lossy()));
                // Reread on every call: a jump is seen at once.
                cluster.set_server_env(id, "FAKETIME_NO_CACHE", Some("1"));
                cluster.set_server_env(id, "FAKETIME_DONT_FAKE_MONOTONIC", Some("1"));
            }
        }
        // Spawned once all are known: each one's link routes name the others.
        for &id in addrs.keys() {
            cluster.spawn(id)?;
        }
        cluster.wait_for_leader(cluster.settings.start_timeout).await?;
        Ok(cluster)
    }

    fn new_server(&self, id: u64, addr: String, initial_cluster: Option<String>) -> anyhow::Result<Server> {
        let http_addr = if self.settings.http {
            Some(format!("127.0.0.1:{}", free_port()?))
        } else {
            None
        };
        Ok(Server {
            id,
            addr,
            http_addr,
            data_dir: self.dir.path().join(format!("node-{id}")),
            initial_cluster,
            process: Process::new(self.dir.path().join(format!("node-{id}.log"))),
        })
    }

    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let settings = self.settings.clone();
        let binary = self.binary.clone();
        let routes: Vec<String> = self
            .links
            .iter()
            .filter(|((from, _), _)| *from == id)
            .filter_map(|((_, to), proxy)| Some(format!("{}={}", self.servers.get(to)?.addr, proxy.addr)))
            .collect();
        let own_env = self.server_env.get(&id).cloned().unwrap_or_default();
        let server = self.server_mut(id)?;
        let mut command = Command::new(binary);
        command
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(&server.addr)
            .arg("--data-dir")
            .arg(&server.data_dir)
            .env(
                "ROTA_RAFT__SNAPSHOT_EVERY_LOGS",
                settings.snapshot_every_logs.to_string(),
            )
            .env(
                "ROTA_RAFT__KEEP_LOGS_AFTER_SNAPSHOT",
                settings.keep_logs_after_snapshot.to_string(),
            )
            .envs(settings.security.iter().flat_map(Security::server_env))
            .envs(settings.env.iter().map(|(k, v)| (k, v)))
            .envs(own_env.iter().map(|(k, v)| (k, v)))
            .env_remove("ROTA_SERVERS");
        if !routes.is_empty() {
            command.env("ROTA_TEST_PEER_ROUTES", routes.join(","));
        }
        if let Some(cluster) = &server.initial_cluster {
            command.arg("--initial-cluster").arg(cluster);
        }
        if let Some(http) = &server.http_addr {
            command.arg("--http-listen").arg(http);
        }
        server.process.spawn(command)
    }

    /// A server of the cluster.
    pub fn server(&self, id: u64) -> anyhow::Result<&Server> {
        self.servers.get(&id).with_context(|| format!("no server {id}"))
    }

    fn server_mut(&mut self, id: u64) -> anyhow::Result<&mut Server> {
        self.servers.get_mut(&id).with_context(|| format!("no server {id}"))
    }

    /// Whether server `id` is running.
    pub fn is_running(&mut self, id: u64) -> bool {
        self.servers.get_mut(&id).is_some_and(|s| s.process.is_running())
    }

    /// Ids of all servers started, running or not.
    pub fn ids(&self) -> Vec<u64> {
        self.servers.keys().copied().collect()
    }

    /// Ids of the servers whose process runs (or is paused), not killed.
    pub fn running_ids(&self) -> Vec<u64> {
        self.servers
            .iter()
            .filter(|(_, s)| s.process.child.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The address of server `id`.
    pub fn addr(&self, id: u64) -> anyhow::Result<String> {
        Ok(self.server(id)?.addr.clone())
    }

    /// A client that knows every server.
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::with_options(
            self.servers.values().map(|s| s.addr.clone()),
            self.client_options(),
        )?)
    }

    /// A client that only knows server `id` (and follows its hints).
    pub fn client_for(&self, id: u64) -> anyhow::Result<Client> {
        Ok(Client::with_options([self.addr(id)?], self.client_options())?)
    }

    /// The options of the harness's clients: with a secured cluster, a
    /// client certificate and the bootstrap token.
    pub fn client_options(&self) -> ClientOptions {
        match &self.settings.security {
            Some(security) => security.client_options(Some(&security.bootstrap_token)),
            None => test_client_options(),
        }
    }

    /// The whole log of server `id`.
    pub fn server_log(&self, id: u64) -> anyhow::Result<String> {
        let log = &self.server(id)?.process.log;
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))
    }

    /// SIGKILLs server `id` and reaps it.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        self.server_mut(id)?
            .process
            .kill()
            .with_context(|| format!("server {id}"))
    }

    /// Sends `signal` to server `id`.
    pub fn signal(&mut self, id: u64, signal: Signal) -> anyhow::Result<()> {
        self.server_mut(id)?
            .process
            .signal(signal)
            .with_context(|| format!("server {id}"))
    }

    /// Waits (bounded) for server `id` to exit by itself; returns its status.
    pub async fn wait_exit(&mut self, id: u64, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let server = self.server_mut(id)?;
        server
            .process
            .wait_exit(timeout)
            .await
            .with_context(|| format!("server {id}"))
    }

    /// Starts server `id` again on its data directory, with its original flags.
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        if self.server_mut(id)?.process.is_running() {
            bail!("server {id} is still running");
        }
        self.spawn(id)
    }

    /// Sets (or with `None` removes) environment variable `key` of server
    /// `id` from its next start on.
    pub fn set_server_env(&mut self, id: u64, key: &str, value: Option<&str>) {
        let env = self.server_env.entry(id).or_default();
        env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            env.push((key.to_owned(), value.to_owned()));
        }
    }

    fn clock_file(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("clock-{id}"))
    }

    /// Sets server `id`'s wall clock to the true time plus `seconds` (a
    /// jump, seen by the server at once; needs
    /// [`ServerSettings::skewable_clocks`] for it to matter).
    pub fn set_clock_offset(&self, id: u64, seconds: i64) -> anyhow::Result<()> {
        // libfaketime rereads the file; replace it whole, never half-written.
        let file = self.clock_file(id);
        let partial = file.with_extension("new");
        std::fs::write(&partial, format!("{seconds:+}\n"))?;
        std::fs::rename(&partial, &file)?;
        Ok(())
    }

    /// The proxy server `from` dials to reach server `to` (needs
    /// [`ServerSettings::link_proxies`]).
    pub fn link(&self, from: u64, to: u64) -> anyhow::Result<&proxy::Proxy> {
        self.links
            .get(&(from, to))
            .with_context(|| format!("no link proxy {from}→{to} (ServerSettings::link_proxies)"))
    }

    /// Cuts the link from server `from` to server `to` one way: what
    /// `from` sends to `to` stalls (and so do the answers to it); `to` still
    /// reaches `from`.
    pub fn cut_link(&self, from: u64, to: u64) -> anyhow::Result<()> {
        self.link(from, to)?.cut();
        Ok(())
    }

    /// Partitions the servers into `groups`: links inside a group work,
    /// links between groups are cut both ways. Servers in no group are cut
    /// off from everyone.
    pub fn partition(&self, groups: &[&[u64]]) -> anyhow::Result<()> {
        let group_of = |id: u64| groups.iter().position(|g| g.contains(&id));
        self.connect_only(|from, to| group_of(from).is_some_and(|g| group_of(to) == Some(g)))
    }

    /// Keeps the link from `from` to `to` when `connected(from, to)`, cuts
    /// it otherwise (any shape: a ring, one-way cuts, ...).
    pub fn connect_only(&self, connected: impl Fn(u64, u64) -> bool) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.links.is_empty(),
            "cutting links needs ServerSettings::link_proxies"
        );
        for (&(from, to), proxy) in &self.links {
            if connected(from, to) {
                proxy.restore();
            } else {
                proxy.cut();
            }
        }
        Ok(())
    }

    /// Restores every server-to-server link.
    pub fn heal(&self) {
        for proxy in self.links.values() {
            proxy.restore();
            proxy.set_delay(Duration::ZERO);
        }
    }

    /// Starts a new, unjoined server (no --initial-cluster) and returns its id.
    pub fn start_new_server(&mut self) -> anyhow::Result<u64> {
        let id = self.servers.keys().max().copied().unwrap_or(0) + 1;
        let server = self.new_server(id, format!("127.0.0.1:{}", free_port()?), None)?;
        self.servers.insert(id, server);
        self.spawn(id)?;
        Ok(id)
    }

    /// The status server `id` reports about itself.
    pub async fn status(&self, id: u64) -> anyhow::Result<pb::GetStatusResponse> {
        let client = self.client_for(id)?;
        Ok(client.server_status(&self.addr(id)?).await?)
    }

    /// Waits until the running founding servers agree on one leader that is
    /// itself running; returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let running: Vec<u64> = self
            .servers
            .iter()
            .filter(|(_, s)| s.process.child.is_some() && s.initial_cluster.is_some())
            .map(|(id, _)| *id)
            .collect();
        self.wait_for_leader_among(&running, timeout).await
    }

    /// Waits until servers `ids` all name the same leader, one of them (the
    /// others may be paused or cut off), and returns it.
    pub async fn wait_for_leader_among(&self, ids: &[u64], timeout: Duration) -> anyhow::Result<u64> {
        wait_for("a leader the given servers agree on", timeout, || async move {
            let mut leaders = Vec::new();
            for &id in ids {
                let status = self.status(id).await.map_err(|e| format!("server {id}: {e}"))?;
                leaders.push(status.leader_id);
            }
            let first = leaders.first().copied().unwrap_or(0);
            let agreed = first != 0 && leaders.iter().all(|&l| l == first);
            Ok((agreed && ids.contains(&first)).then_some(first))
        })
        .await
    }

    /// Every server's address, comma-separated (for `--servers`).
    pub fn servers_arg(&self) -> String {
        self.servers
            .values()
            .map(|s| s.addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts a `rota-worker` (or starts it again, on the same data
    /// directory, if it ran before).
    pub fn start_worker(&mut self, settings: WorkerSettings) -> anyhow::Result<()> {
        let servers = settings
            .servers
            .clone()
            .map_or_else(|| self.servers_arg(), |s| s.join(","));
        let id = settings.id.clone();
        let data_dir = self.dir.path().join(format!("worker-{id}"));
        let log = self.dir.path().join(format!("worker-{id}.log"));
        let worker = self.workers.entry(id.clone()).or_insert_with(|| Worker {
            settings: settings.clone(),
            data_dir: data_dir.clone(),
            process: Process::new(log),
            http_addr: None,
        });
        if worker.process.is_running() {
            bail!("worker {id} is still running");
        }
        worker.settings = settings.clone();
        let mut command = Command::new(binary("rota-worker")?);
        command
            .arg("--servers")
            .arg(servers)
            .arg("--id")
            .arg(&id)
            .arg("--drivers")
            .arg(&settings.drivers)
            .arg("--slots")
            .arg(settings.slots.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .env_remove("ROTA_SERVERS")
            .env("ROTA_RECONCILE_INTERVAL", "2s")
            .envs(settings.env.iter().map(|(k, v)| (k, v)));
        if !settings.labels.is_empty() {
            command.arg("--labels").arg(&settings.labels);
        }
        if settings.http {
            let addr = match &worker.http_addr {
                Some(addr) => addr.clone(),
                None => format!("127.0.0.1:{}", free_port()?),
            };
            command.arg("--http-listen").arg(&addr);
            worker.http_addr = Some(addr);
        }
        worker.process.spawn(command)
    }

    /// Ids of every worker started so far.
    pub fn worker_ids(&self) -> Vec<String> {
        self.workers.keys().cloned().collect()
    }

    /// Worker `id`.
    pub fn worker(&mut self, id: &str) -> anyhow::Result<&mut Worker> {
        self.workers.get_mut(id).with_context(|| format!("no worker {id}"))
    }

    /// The whole log of worker `id` so far.
    pub fn workers_log(&self, id: &str) -> String {
        self.workers
            .get(id)
            .and_then(|w| std::fs::read_to_string(&w.process.log).ok())
            .unwrap_or_default()
    }

    /// Starts worker `id` again with its settings, on its data directory.
    pub fn restart_worker(&mut self, id: &str) -> anyhow::Result<()> {
        let settings = self.worker(id)?.settings.clone();
        self.start_worker(settings)
    }

    /// The outcome of a test scenario: on an error, prints every log tail
    /// and panics with the error.
    pub fn settle<T>(&self, result: anyhow::Result<T>) -> T {
        match result {
            Ok(value) => value,
            Err(e) => {
                self.dump_logs();
                panic!("{e:#}");
            }
        }
    }

    /// Prints every server's and worker's log tail (for failing tests).
    pub fn dump_logs(&self) {
        for server in self.servers.values() {
            eprintln!(
                "----- server {} ({}) log tail -----\n{}",
                server.id,
                server.addr,
                server.process.log_tail(40)
            );
        }
        for (id, worker) in &self.workers {
            eprintln!("----- worker {id} log tail -----\n{}", worker.process.log_tail(60));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for worker in self.workers.values_mut() {
            worker.process.stop();
        }
        for server in self.servers.values_mut() {
            server.process.stop();
        }
    }
}

/// Runs the built `rotactl` with `args` against `servers`, off the async
/// runtime, with no config file of the user's.
pub async fn rotactl(servers: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
    rotactl_with(&[("ROTA_SERVERS", servers)], args).await
}

/// Runs the built `rotactl` with `args` and environment `env` (nothing
/// else of rota's from the caller's environment: no `ROTA_*` or
/// `ROTACTL_*`, no
/// `NO_COLOR`, and a config file that does not exist unless `env` names
/// one).
pub async fn rotactl_with(env: &[(&str, &str)], args: &[&str]) -> anyhow::Result<std::process::Output> {
    let mut command = rotactl_command(env, args)?;
    let output = tokio::time::timeout(Duration::from_secs(60), command.output()).await??;
    Ok(output)
}

/// The command [`rotactl_with`] runs, to spawn it (killed when dropped).
pub fn rotactl_command(env: &[(&str, &str)], args: &[&str]) -> anyhow::Result<tokio::process::Command> {
    let bin = binary("rotactl")?;
    let mut command = tokio::process::Command::new(bin);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ROTA") {
            command.env_remove(key);
        }
    }
    let no_config = std::env::temp_dir().join(format!("rota-test-no-config-{}.yaml", std::process::id()));
    command
        .args(args)
        .env_remove("NO_COLOR")
        .env("ROTACTL_CONFIG", no_config)
        .envs(env.iter().copied())
        .kill_on_drop(true);
    Ok(command)
}

/// A command's status and output, for assertion messages.
pub fn output_text(output: &std::process::Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The seed of a randomized scenario: `ROTA_CHAOS_SEED` if set (to repeat
/// a run), else a fresh one; printed so a failure can be repeated.
pub fn scenario_seed(scenario: &str) -> u64 {
    let seed = std::env::var("ROTA_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{scenario}: seed {seed} (repeat with ROTA_CHAOS_SEED={seed})");
    seed
}

/// Triggers `job` and waits (up to 90 s) for its run to end; returns the run.
pub async fn run_to_end(client: &Client, job: &str) -> anyhow::Result<pb::Run> {
    let (run, _) = client.trigger_run(job, None, Default::default(), false).await?;
    wait_for(
        &format!("run {} of {job} to end", run.id),
        Duration::from_secs(90),
        || async {
            let run = client
                .get_run(&run.id, rota_client::Consistency::Linearizable)
                .await
                .map_err(|e| e.to_string())?;
            Ok(run.finished_at.is_some().then_some(run))
        },
    )
    .await
}

/// Client options for tests: patient enough for elections on a loaded machine.
pub fn test_client_options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(10),
        max_attempts: 40,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
        ..Default::default()
    }
}

/// A minimal valid job spec named `name`.
pub fn job_spec(name: &str) -> pb::JobSpec {
    pb::JobSpec {
        name: name.to_owned(),
        schedule: Some(pb::Schedule {
            kind: Some(pb::schedule::Kind::Cron("0 3 * * *".to_owned())),
            timezone: "Europe/Berlin".to_owned(),
            ..Default::default()
        }),
        task: Some(pb::Task {
            image: "debian:12".to_owned(),
            command: vec!["make".to_owned(), "test".to_owned()],
            ..Default::default()
        }),
        ..Default::default()
    }
}
