//! Who may talk to ingest: the server's TLS identity (and, for mutual TLS, the CA that signs
//! client certificates) turned into tonic's [`ServerTlsConfig`], and the bearer-token check on
//! every ingest call.
//!
//! The files are read once, by [`Config::resolve`](crate::config::Config::resolve), so that a
//! wrong path fails at start-up naming its setting. Nothing here prints a key or a token: their
//! `Debug` shows the file's path only, and a refused call is logged without what it presented.
//! Health and reflection are not behind the token (kubelet's probes run `inferscope health`,
//! which carries none); TLS covers every service, since it is the connection's.

use crate::config::ConfigError;
use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc,
    },
};
use tonic::{
    service::Interceptor,
    transport::{Certificate, Identity, ServerTlsConfig},
    Request, Status,
};

/// The contents of a file holding a secret (a token, a password) that `setting` names, without
/// surrounding whitespace (a mounted Secret often ends with a newline).
pub fn read_secret(setting: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let text = std::fs::read(path).map_err(|source| ConfigError::File {
        setting,
        path: path.to_owned(),
        source,
    })?;
    Ok(text.trim_ascii().to_vec())
}

/// The contents of a PEM file a setting names (certificates, a CA bundle or a private key).
#[derive(Clone, PartialEq, Eq)]
pub struct PemFile {
    /// Where it was read from, for messages.
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

impl PemFile {
    /// Reads `path` for `setting`; a missing file or one without a PEM block names the setting.
    pub fn read(setting: &'static str, path: PathBuf) -> Result<Self, ConfigError> {
        let pem = std::fs::read(&path).map_err(|source| ConfigError::File {
            setting,
            path: path.clone(),
            source,
        })?;
        if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
            return Err(ConfigError::Invalid {
                setting,
                value: path.display().to_string(),
                fix: "give a PEM file (blocks starting with -----BEGIN)",
            });
        }
        Ok(Self { path, pem })
    }
}

/// The path only: a private key must not reach a log line.
impl std::fmt::Debug for PemFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PemFile({})", self.path.display())
    }
}

/// TLS of the ingest server (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// The certificate chain, leaf first.
    pub cert: PemFile,
    pub key: PemFile,
    /// When set, every client must present a certificate this CA bundle verifies (mTLS).
    pub client_ca: Option<PemFile>,
}

impl ServerTls {
    /// tonic's server configuration (rustls). Client certificates are required, not optional,
    /// when a client CA is given.
    pub fn server_config(&self) -> ServerTlsConfig {
        let config =
            ServerTlsConfig::new().identity(Identity::from_pem(&self.cert.pem, &self.key.pem));
        match &self.client_ca {
            Some(ca) => config
                .client_ca_root(Certificate::from_pem(&ca.pem))
                .client_auth_optional(false),
            None => config,
        }
    }
}

/// The bearer token of `--auth-token-file`.
#[derive(Clone)]
pub struct AuthToken(Arc<[u8]>);

impl AuthToken {
    /// The token in `path`, without surrounding whitespace (a trailing newline is usual).
    pub fn read(path: Option<PathBuf>) -> Result<Option<Self>, ConfigError> {
        const SETTING: &str = "INFERSCOPE_AUTH_TOKEN_FILE (--auth-token-file)";
        let Some(path) = path else {
            return Ok(None);
        };
        Self::new(&read_secret(SETTING, &path)?)
            .map(Some)
            .ok_or(ConfigError::Invalid {
                setting: SETTING,
                value: path.display().to_string(),
                fix: "the file must hold one token of printable ASCII without spaces",
            })
    }

    /// The `authorization` header value a client presents: `Bearer <token>`.
    pub fn header(&self) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
        let mut value = b"Bearer ".to_vec();
        value.extend_from_slice(&self.0);
        tonic::metadata::MetadataValue::try_from(value).expect("a token is printable ASCII")
    }

    /// A token of printable ASCII (what an `authorization` header can carry), not empty.
    pub fn new(token: &[u8]) -> Option<Self> {
        let printable = token.iter().all(|b| b.is_ascii_graphic());
        (printable && !token.is_empty()).then(|| Self(token.into()))
    }

    /// Whether `presented` is the token, in time that does not depend on where they differ.
    /// Only the length can be told apart, and it says little about a random token.
    fn matches(&self, presented: &[u8]) -> bool {
        if presented.len() != self.0.len() {
            return false;
        }
        let difference = self
            .0
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // Keep the compiler from turning the fold into an early-exit comparison.
        std::hint::black_box(difference) == 0
    }
}

/// Never the token itself.
impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

impl PartialEq for AuthToken {
    fn eq(&self, other: &Self) -> bool {
        self.matches(&other.0)
    }
}

/// The token check on each ingest call: `authorization: Bearer <token>` (the scheme's case does
/// not matter, RFC 6750 §2.1), else UNAUTHENTICATED. Without a token every call passes.
#[derive(Debug, Clone, Default)]
pub struct BearerAuth {
    token: Option<AuthToken>,
    /// Whether a refusal was logged: the first is, the client hears about each one.
    refused: Arc<AtomicBool>,
}

impl BearerAuth {
    pub fn new(token: Option<AuthToken>) -> Self {
        Self {
            token,
            refused: Arc::default(),
        }
    }

    fn check(&self, header: Option<&[u8]>) -> Result<(), &'static str> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let header = header.ok_or("missing authorization: Bearer <token>")?;
        let presented = match header.split_at_checked(7) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest.trim_ascii(),
            _ => return Err("authorization is not a Bearer token"),
        };
        if token.matches(presented) {
            Ok(())
        } else {
            Err("invalid bearer token")
        }
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes());
        match self.check(header) {
            Ok(()) => Ok(request),
            Err(reason) => {
                if !self.refused.swap(true, Relaxed) {
                    tracing::warn!(
                        peer = ?request.remote_addr(),
                        reason,
                        "ingest call refused: no valid bearer token (logged once)"
                    );
                }
                Err(Status::unauthenticated(reason))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(token: &str) -> BearerAuth {
        BearerAuth::new(AuthToken::new(token.as_bytes()))
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let a = auth("s3cret-token");
        assert!(a.check(Some(b"Bearer s3cret-token")).is_ok());
        assert!(a.check(Some(b"bearer s3cret-token")).is_ok());
        assert!(a.check(None).is_err());
        assert!(a.check(Some(b"Bearer s3cret-tokem")).is_err());
        assert!(a.check(Some(b"Bearer s3cret")).is_err());
        assert!(a.check(Some(b"Basic s3cret-token")).is_err());
        assert!(a.check(Some(b"s3cret-token")).is_err());
        assert!(BearerAuth::new(None).check(None).is_ok());
    }

    #[test]
    fn tokens_and_keys_stay_out_of_debug_output() {
        let token = AuthToken::new(b"s3cret-token").unwrap();
        assert!(!format!("{token:?}").contains("s3cret"));
        let key = PemFile {
            path: "/etc/tls/key.pem".into(),
            pem: b"-----BEGIN PRIVATE KEY-----\nAAAA".to_vec(),
        };
        assert_eq!(format!("{key:?}"), "PemFile(/etc/tls/key.pem)");
    }

    #[test]
    fn a_token_file_is_trimmed_and_must_hold_a_token() {
        let dir = std::env::temp_dir().join(format!("inferscope-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "abc123\n").unwrap();
        let token = AuthToken::read(Some(path.clone())).unwrap().unwrap();
        assert!(token.matches(b"abc123"));
        std::fs::write(&path, "two words\n").unwrap();
        let err = AuthToken::read(Some(path)).unwrap_err().to_string();
        assert!(err.contains("--auth-token-file"), "{err}");
        let err = AuthToken::read(Some(dir.join("missing")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--auth-token-file"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
