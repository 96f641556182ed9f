//! Mutual TLS on every rota link: the server's listener ([`Incoming`]) and
//! the connector of every channel a server, worker or client opens
//! ([`Connector`]).
//!
//! One CA signs every certificate of a cluster. A certificate's *role* is a
//! DNS name in its subject alternative names, as in Nomad's
//! `server.<region>.nomad`: `server.rota`, `worker.rota` or `client.rota`
//! ([`Role`]). Whoever dials a server checks that the certificate it is shown
//! is valid for `server.rota` — whatever address it dialed — so a worker's
//! or a client's certificate cannot pass for a server. A server asks every
//! caller for a certificate of the cluster's CA and hands the caller's role
//! to the services in the request's [`Peer`] extension, where the access
//! check reads it (Raft calls need a server's certificate).
//!
//! Certificates are reloaded when their files change ([`Tls::watch`]):
//! new connections use the new ones, open connections keep theirs. A
//! reload that fails (a half-written file) keeps the previous material and
//! is retried at the next change.
//!
//! This is done here rather than with tonic's own TLS options because those
//! take the material once, when a channel or server is built.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tonic::transport::server::Connected;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Handshakes in progress at once; beyond that, accepting waits (the
/// kernel's backlog holds the rest), so idle connections cannot use up the
/// file descriptors.
const MAX_HANDSHAKES: usize = 256;

/// Refused handshakes logged per second; the rest are counted, and the
/// count is logged with the next line.
const REFUSALS_LOGGED_PER_SECOND: u32 = 10;

/// Connections accepted but not yet taken by the gRPC server.
const ACCEPT_QUEUE: usize = 128;

/// What a certificate allows its holder to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// A cluster member: Raft traffic, forwarding, and any client call.
    Server,
    /// A worker: the worker protocol.
    Worker,
    /// A person or program using the API (with a token of its own).
    Client,
}

impl Role {
    /// Every role, strongest first.
    pub const ALL: [Role; 3] = [Role::Server, Role::Worker, Role::Client];

    /// The DNS name a certificate of this role carries.
    pub fn dns_name(self) -> &'static str {
        match self {
            Role::Server => "server.rota",
            Role::Worker => "worker.rota",
            Role::Client => "client.rota",
        }
    }

    /// Its name in messages and audit lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Worker => "worker",
            Role::Client => "client",
        }
    }

    /// Whether `cert` is valid for this role's name.
    pub fn is_held_by(self, cert: &CertificateDer<'_>) -> bool {
        let Ok(name) = ServerName::try_from(self.dns_name()) else {
            return false;
        };
        webpki::EndEntityCert::try_from(cert)
            .and_then(|cert| cert.verify_is_valid_for_subject_name(&name))
            .is_ok()
    }

    /// The strongest role `cert` holds.
    pub fn of(cert: &CertificateDer<'_>) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.is_held_by(cert))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The PEM files of one member of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The cluster's CA certificate: every peer must present a certificate
    /// it signed.
    pub ca_file: PathBuf,
    /// This member's certificate (chain).
    pub cert_file: PathBuf,
    /// This member's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The material built from the files, and when the files were last changed.
struct Material {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    stamp: Vec<Option<SystemTime>>,
}

/// The TLS set-up of one program, reloadable.
pub struct Tls {
    files: TlsFiles,
    role: Role,
    current: RwLock<Arc<Material>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the files of a member that holds `role`; refuses a certificate
    /// that is not valid for the role's name (e.g. a worker certificate
    /// given to a server).
    pub fn load(files: TlsFiles, role: Role) -> Result<Arc<Tls>, TlsError> {
        let material = build(&files, role)?;
        Ok(Arc::new(Tls {
            files,
            role,
            current: RwLock::new(Arc::new(material)),
        }))
    }

    /// The files.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    fn material(&self) -> Arc<Material> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reloads the material if a file changed since it was loaded. `Ok(true)`
    /// when new material is in use; on error the old material stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        if stamp(&self.files) == self.material().stamp {
            return Ok(false);
        }
        let material = build(&self.files, self.role)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(material);
        Ok(true)
    }

    /// Checks the files every `every` and reloads them when they change;
    /// runs until dropped.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut failed_stamp = None;
        loop {
            tokio::time::sleep(every).await;
            let now = stamp(&self.files);
            if failed_stamp.as_ref() == Some(&now) {
                continue;
            }
            match self.reload() {
                Ok(true) => {
                    failed_stamp = None;
                    tracing::info!(cert = %self.files.cert_file.display(), "TLS certificates reloaded");
                }
                Ok(false) => {}
                Err(error) => {
                    failed_stamp = Some(now);
                    tracing::warn!(%error, "TLS certificates changed but cannot be loaded; keeping the previous ones");
                }
            }
        }
    }

    /// The connector for channels to servers.
    pub fn connector(self: &Arc<Self>) -> Connector {
        Connector {
            tls: Some(self.clone()),
        }
    }
}

fn stamp(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    [&files.ca_file, &files.cert_file, &files.key_file]
        .into_iter()
        .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
        .collect()
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{what} {}: no PEM certificate in the file",
            path.display()
        )));
    }
    Ok(certs)
}

fn build(files: &TlsFiles, role: Role) -> Result<Material, TlsError> {
    // The stamp is taken before reading, so a change during the read is
    // seen at the next check.
    let stamp = stamp(files);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(&files.ca_file, "tls.ca_file")? {
        roots
            .add(cert)
            .map_err(|e| TlsError(format!("tls.ca_file {}: {e}", files.ca_file.display())))?;
    }
    let roots = Arc::new(roots);
    let chain = read_certs(&files.cert_file, "tls.cert_file")?;
    if !role.is_held_by(&chain[0]) {
        return Err(TlsError(format!(
            "tls.cert_file {}: the certificate is not valid for {:?}, the name every {role} certificate \
             carries (made by `rotactl tls init`)",
            files.cert_file.display(),
            role.dns_name()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|e| TlsError(format!("tls.key_file {}: {e}", files.key_file.display())))?;

    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| TlsError(format!("tls.ca_file {}: {e}", files.ca_file.display())))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| TlsError(format!("tls.cert_file/tls.key_file: {e}")))?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError(format!("tls.cert_file/tls.key_file: {e}")))?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Material {
        server: Arc::new(server),
        client: Arc::new(client),
        stamp,
    })
}

/// Who is on the other end of a server's connection; every request carries
/// it as an extension.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The caller's address.
    pub remote_addr: Option<SocketAddr>,
    /// Whether the connection is TLS (its certificate was verified).
    pub tls: bool,
    /// The role its certificate holds (`None` without TLS, or for a
    /// certificate of the CA that names no role).
    pub role: Option<Role>,
}

/// A stream that is plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum MaybeTls<T> {
    /// No TLS.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<T>),
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            MaybeTls::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            MaybeTls::Tls($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl<T: AsyncRead + Unpin> AsyncRead for MaybeTls<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for MaybeTls<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// A connection a server accepted.
pub type ServerConn = MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;

impl Connected for ServerConn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        match self {
            MaybeTls::Plain(tcp) => Peer {
                remote_addr: tcp.peer_addr().ok(),
                tls: false,
                role: None,
            },
            MaybeTls::Tls(tls) => {
                let (tcp, session) = tls.get_ref();
                Peer {
                    remote_addr: tcp.peer_addr().ok(),
                    tls: true,
                    role: session
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(Role::of),
                }
            }
        }
    }
}

/// The connections of a server's listener, handshaken when TLS is on (each
/// handshake on a task of its own, so a slow caller holds up nobody). A
/// failed handshake is logged on the `audit` target and the connection
/// dropped.
pub struct Incoming {
    rx: mpsc::Receiver<io::Result<ServerConn>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Incoming {
    /// Accepts on `listener`, with TLS from `tls` if given.
    pub fn new(listener: TcpListener, tls: Option<Arc<Tls>>) -> Incoming {
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let accept = tokio::spawn(accept_loop(listener, tls, tx));
        Incoming { rx, accept }
    }
}

impl tokio_stream::Stream for Incoming {
    type Item = io::Result<ServerConn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Logs refused handshakes on the `audit` target, at most
/// [`REFUSALS_LOGGED_PER_SECOND`] a second (a flood of bad connections must
/// not flood the log).
#[derive(Default)]
struct RefusalLog {
    window: std::sync::Mutex<Option<(std::time::Instant, u32, u64)>>,
}

impl RefusalLog {
    fn refused(&self, remote: SocketAddr, error: &str) {
        let now = std::time::Instant::now();
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let (start, logged, suppressed) = window.get_or_insert((now, 0, 0));
        if now.duration_since(*start) >= Duration::from_secs(1) {
            if *suppressed > 0 {
                tracing::warn!(target: "audit", allowed = false, suppressed = *suppressed, "more TLS handshakes refused (not logged one by one)");
            }
            *start = now;
            *logged = 0;
            *suppressed = 0;
        }
        if *logged < REFUSALS_LOGGED_PER_SECOND {
            *logged += 1;
            tracing::warn!(target: "audit", %remote, allowed = false, %error, "TLS handshake refused");
        } else {
            *suppressed += 1;
        }
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<Arc<Tls>>, tx: mpsc::Sender<io::Result<ServerConn>>) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let refusals = Arc::new(RefusalLog::default());
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off briefly
                // rather than spin.
                tracing::warn!(%error, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &tls else {
            if tx.send(Ok(MaybeTls::Plain(tcp))).await.is_err() {
                return;
            }
            continue;
        };
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.material().server.clone());
        let tx = tx.clone();
        let refusals = refusals.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            drop(permit);
            match handshake {
                Ok(Ok(stream)) => {
                    let _ = tx.send(Ok(MaybeTls::Tls(Box::new(stream)))).await;
                }
                Ok(Err(error)) => refusals.refused(remote, &error.to_string()),
                Err(_) => refusals.refused(remote, "the handshake timed out"),
            }
        });
    }
}

/// A connection a client opened.
pub type ClientConn = MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

/// Opens the connections of a channel: plain TCP, or TLS checking that the
/// server's certificate holds the server role.
#[derive(Debug, Clone, Default)]
pub struct Connector {
    tls: Option<Arc<Tls>>,
}

impl Connector {
    /// Plain TCP.
    pub fn plain() -> Connector {
        Connector { tls: None }
    }

    /// With `tls` if given.
    pub fn new(tls: Option<&Arc<Tls>>) -> Connector {
        Connector { tls: tls.cloned() }
    }

    /// A lazily connecting channel to `endpoint` through this connector.
    pub fn channel(&self, endpoint: tonic::transport::Endpoint) -> tonic::transport::Channel {
        endpoint.connect_with_connector_lazy(self.clone())
    }

    /// A channel to `endpoint`, connected now.
    pub async fn connect(
        &self,
        endpoint: tonic::transport::Endpoint,
    ) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        endpoint.connect_with_connector(self.clone()).await
    }
}

impl tower::Service<tonic::codegen::http::Uri> for Connector {
    type Response = TokioIo<ClientConn>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: tonic::codegen::http::Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(80);
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            let Some(tls) = tls else {
                return Ok(TokioIo::new(MaybeTls::Plain(tcp)));
            };
            let connector = tokio_rustls::TlsConnector::from(tls.material().client.clone());
            let name = ServerName::try_from(Role::Server.dns_name())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let stream = connector.connect(name, tcp).await?;
            Ok(TokioIo::new(MaybeTls::Tls(Box::new(stream))))
        })
    }
}
