//! Certificates for a cluster (`rotactl tls init`): a CA and one
//! certificate per role, each carrying its role's name (`server.rota`,
//! `worker.rota`, `client.rota`, see [`rota_proto::tls::Role`]) so a
//! certificate of one role cannot pass for another.
//!
//! The server certificate also names `localhost`, `127.0.0.1` and any host
//! given, for tools that check names the usual way; rota itself always
//! checks for `server.rota`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rota_proto::tls::{Role, TlsFiles};
use time::OffsetDateTime;

/// A certificate and its key, PEM-encoded.
#[derive(Clone)]
pub struct Pem {
    /// The certificate.
    pub cert: String,
    /// Its private key.
    pub key: String,
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pem").field("cert", &self.cert).finish_non_exhaustive()
    }
}

/// A certificate authority that signs the certificates of one cluster.
pub struct Authority {
    params: CertificateParams,
    key: KeyPair,
    /// The CA certificate and key.
    pub pem: Pem,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("pem", &self.pem)
            .finish_non_exhaustive()
    }
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// From.
    pub not_before: OffsetDateTime,
    /// Until.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (clock skew) for `lifetime`.
    pub fn from_now(lifetime: Duration) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - time::Duration::hours(1),
            not_after: now + lifetime,
        }
    }
}

fn named(common_name: &str, sans: Vec<String>, validity: Validity) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(sans)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "rota");
    params.distinguished_name = name;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    Ok(params)
}

impl Authority {
    /// A new CA named `name`.
    pub fn new(name: &str, validity: Validity) -> Result<Authority, rcgen::Error> {
        let mut params = named(name, Vec::new(), validity)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let pem = Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        };
        Ok(Authority { params, key, pem })
    }

    /// A certificate for `role`, also naming `extra_names` (DNS names or IP
    /// addresses), usable both to serve and to dial (servers do both).
    pub fn issue(&self, role: Role, extra_names: &[String], validity: Validity) -> Result<Pem, rcgen::Error> {
        let mut sans = vec![role.dns_name().to_owned()];
        sans.extend(extra_names.iter().cloned());
        let mut params = named(&format!("rota {role}"), sans, validity)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// What `rotactl tls init` wrote.
#[derive(Debug)]
pub struct ClusterFiles {
    /// The CA (also written to `ca.pem`, `ca-key.pem`).
    pub authority: Authority,
    /// The CA certificate.
    pub ca: PathBuf,
    /// The files each role uses (`[tls]` of its config).
    pub roles: Vec<(Role, TlsFiles)>,
    /// The bootstrap admin token.
    pub bootstrap_token: PathBuf,
    /// The workers' shared token (every server's `auth.worker_token_file`,
    /// every worker's `token_file`).
    pub worker_token: PathBuf,
    /// The key that seals jobs' secret values (every server's
    /// `secrets.key_file`).
    pub secrets_key: PathBuf,
}

/// File names of a role's certificate and key in the directory.
pub fn role_files(dir: &Path, role: Role) -> TlsFiles {
    TlsFiles {
        ca_file: dir.join("ca.pem"),
        cert_file: dir.join(format!("{role}.pem")),
        key_file: dir.join(format!("{role}-key.pem")),
    }
}

/// Writes a new CA (`ca.pem`, `ca-key.pem`), a certificate and key per
/// role (`server.pem`, `server-key.pem`, `worker.pem`, ...), a bootstrap
/// admin token (`bootstrap.token`), the workers' shared token
/// (`worker.token`) and the secrets key (`secrets.key`) into `dir`. Refuses to overwrite any
/// existing file. Keys and the token are written readable by the owner only.
pub fn init_cluster(
    dir: &Path,
    server_names: &[String],
    lifetime: Duration,
    bootstrap_token: &str,
) -> anyhow::Result<ClusterFiles> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let validity = Validity::from_now(lifetime);
    let ca = Authority::new("rota cluster CA", validity)?;
    let mut outputs: Vec<(PathBuf, String, bool)> = vec![
        (dir.join("ca.pem"), ca.pem.cert.clone(), false),
        (dir.join("ca-key.pem"), ca.pem.key.clone(), true),
    ];
    let mut roles = Vec::new();
    for role in Role::ALL {
        let extra: Vec<String> = match role {
            Role::Server => ["localhost".to_owned(), "127.0.0.1".to_owned()]
                .into_iter()
                .chain(server_names.iter().cloned())
                .collect(),
            Role::Worker | Role::Client => Vec::new(),
        };
        let pem = ca
            .issue(role, &extra, validity)
            .with_context(|| format!("making the {role} certificate (names {extra:?})"))?;
        let files = role_files(dir, role);
        outputs.push((files.cert_file.clone(), pem.cert, false));
        outputs.push((files.key_file.clone(), pem.key, true));
        roles.push((role, files));
    }
    let token_path = dir.join("bootstrap.token");
    outputs.push((token_path.clone(), format!("{bootstrap_token}\n"), true));
    let worker_token = dir.join("worker.token");
    let worker_secret =
        rota_proto::token::new_secret().map_err(|_| anyhow::anyhow!("no randomness for worker.token"))?;
    outputs.push((worker_token.clone(), format!("{worker_secret}\n"), true));
    let secrets_key = dir.join("secrets.key");
    let key = rota_proto::token::random_hex(32).map_err(|_| anyhow::anyhow!("no randomness for secrets.key"))?;
    outputs.push((secrets_key.clone(), format!("{key}\n"), true));
    if let Some((existing, _, _)) = outputs.iter().find(|(path, _, _)| path.exists()) {
        anyhow::bail!(
            "{} exists; `rotactl tls init` never overwrites a cluster's keys — use another --dir",
            existing.display()
        );
    }
    for (path, text, secret) in &outputs {
        write_new(path, text, *secret).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ClusterFiles {
        authority: ca,
        ca: dir.join("ca.pem"),
        roles,
        bootstrap_token: token_path,
        worker_token,
        secrets_key,
    })
}

fn write_new(path: &Path, text: &str, secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn each_certificate_holds_exactly_its_role() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = init_cluster(
            dir.path(),
            &["rota-1.example".into()],
            Duration::from_secs(3600),
            "rota_x",
        )
        .expect("init");
        for (role, files) in &files.roles {
            let cert = CertificateDer::from_pem_file(&files.cert_file).expect("pem");
            assert_eq!(Role::of(&cert), Some(*role));
            for other in Role::ALL.into_iter().filter(|r| r != role) {
                assert!(!other.is_held_by(&cert), "{role} cert holds {other}");
            }
            rota_proto::tls::Tls::load(files.clone(), *role).expect("loads as its role");
        }
        let worker = files
            .roles
            .iter()
            .find(|(r, _)| *r == Role::Worker)
            .expect("worker")
            .1
            .clone();
        let err = rota_proto::tls::Tls::load(worker, Role::Server).expect_err("worker cert as a server");
        assert!(err.to_string().contains("server.rota"), "{err}");
        let again = init_cluster(dir.path(), &[], Duration::from_secs(3600), "rota_x").expect_err("overwrite");
        assert!(again.to_string().contains("never overwrites"), "{again}");
        let mode = std::fs::metadata(dir.path().join("ca-key.pem")).expect("meta");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
    }
}
