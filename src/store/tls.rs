//! TLS for `rediss://`: a rustls client (ring crypto) whose trust anchors come from files
//! only, the system's CA bundle or `redis_tls_ca_file`. No NSS, no OpenSSL; nothing here
//! runs unless the Redis URL asks for TLS.

use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// Where distributions keep the bundle of trusted CAs, most common first (Debian and
/// derivatives, Fedora and RHEL, openSUSE, Alpine and others).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// A TLS session over TCP, driven by blocking reads and writes with socket timeouts.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// The trust anchors: the system bundle (None) or one file of PEM certificates.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let (path, private) = match ca_file {
        Some(p) => (p.to_path_buf(), true),
        None => (system_bundle()?, false),
    };
    let pem = std::fs::read(&path).map_err(|e| format!("CA file {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok);
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        let what = if private {
            "redis_tls_ca_file"
        } else {
            "the system CA bundle"
        };
        return Err(format!(
            "{what} {}: no usable PEM certificate",
            path.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn system_bundle() -> Result<PathBuf, String> {
    SYSTEM_BUNDLES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "no system CA bundle found (looked for {}); set redis_tls_ca_file",
                SYSTEM_BUNDLES.join(", ")
            )
        })
}

/// The name the server's certificate must carry: the URL's host, a DNS name or an IP
/// address (which then needs an IP subjectAltName).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_string())
        .map_err(|_| format!("{host:?} is not a valid TLS server name"))
}

/// What a failed handshake was: the deadline, or anything else (a certificate that does
/// not verify, a server that does not speak TLS), with rustls's words.
pub enum HandshakeError {
    Timeout,
    Failed(String),
}

/// Runs the handshake on `tcp` before `deadline`.
pub fn handshake(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    tcp: TcpStream,
    deadline: Instant,
) -> Result<TlsStream, HandshakeError> {
    let conn =
        ClientConnection::new(config, name).map_err(|e| HandshakeError::Failed(e.to_string()))?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        let left = super::redis::remaining(deadline);
        let timeouts = s
            .sock
            .set_read_timeout(Some(left))
            .and_then(|()| s.sock.set_write_timeout(Some(left)));
        let step = timeouts.and_then(|()| s.conn.complete_io(&mut s.sock));
        match step {
            Ok(_) => {}
            Err(e) if is_timeout(&e) => return Err(HandshakeError::Timeout),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(HandshakeError::Failed(
                    "the server closed the connection during the TLS handshake \
                     (does it speak TLS on this port?)"
                        .into(),
                ));
            }
            Err(e) => return Err(HandshakeError::Failed(e.to_string())),
        }
    }
    Ok(s)
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}
