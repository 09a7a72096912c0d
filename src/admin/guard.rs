//! Who may use the admin endpoint. Against DNS rebinding, a request whose `Host` is a name
//! pgward does not know is refused (IP literals, `localhost` and `admin.allowed_hosts` are
//! known: a rebinding attack needs a name of the attacker's). Against cross-site requests from
//! a browser, a POST must come from the endpoint's own origin: its `Origin` (else its
//! `Referer`) must name the request's `Host`; with neither, a form-encodable `Content-Type`
//! (what an old browser's cross-site form sends) is refused, while curl-style POSTs without
//! a body pass. The bearer token (from `admin.token`, `admin.token_file` or
//! `PGWARD_ADMIN_TOKEN`) is required on any non-loopback listener.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::AdminError;
use super::routes::error;
use super::{AdminSettings, clip};

/// The environment variable that may hold the admin token (e.g. from a Kubernetes Secret).
pub const TOKEN_ENV: &str = "PGWARD_ADMIN_TOKEN";

/// What the request checks need, resolved once at start.
pub(crate) struct Guard {
    pub token: Option<String>,
    /// Lowercased host names besides IP literals and localhost; "*" allows any.
    allowed_hosts: Vec<String>,
}

impl Guard {
    pub(crate) fn new(settings: &AdminSettings) -> Result<Guard, AdminError> {
        Ok(Guard {
            token: settings.resolve_token(std::env::var(TOKEN_ENV).ok())?,
            allowed_hosts: settings
                .allowed_hosts
                .iter()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
        })
    }
}

fn invalid(key: &'static str, message: String) -> AdminError {
    AdminError::Setting { key, message }
}

impl AdminSettings {
    /// The token from its one source (`token`, `token_file`, or `env`, the value of
    /// [`TOKEN_ENV`]); and on a non-loopback listener, one is required.
    pub fn resolve_token(&self, env: Option<String>) -> Result<Option<String>, AdminError> {
        let sources = [
            self.token.is_some(),
            self.token_file.is_some(),
            env.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err(invalid(
                "admin.token",
                format!("set only one of admin.token, admin.token_file and {TOKEN_ENV}"),
            ));
        }
        let token = match (&self.token, &self.token_file, env) {
            (Some(token), _, _) => Some(token.clone()),
            (_, Some(path), _) => Some(read_token_file(path)?),
            (_, _, env) => env,
        };
        if token.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("admin.token", "the admin token is empty".into()));
        }
        let loopback = self
            .listen
            .parse::<std::net::SocketAddr>()
            .map_or(true, |a| a.ip().is_loopback());
        if token.is_none() && !self.listen.is_empty() && !loopback {
            return Err(invalid(
                "admin.token",
                format!(
                    "admin.listen {:?} is not a loopback address: anyone who reaches it could \
                     read stats and purge the cache. Set admin.token, admin.token_file or \
                     {TOKEN_ENV}, or listen on 127.0.0.1",
                    self.listen
                ),
            ));
        }
        Ok(token)
    }
}

/// A token file larger than this is refused: a token is a few dozen bytes, and a path pointing
/// at a device or a huge file must not make pgward read it whole.
const MAX_TOKEN_FILE: u64 = 4096;

/// The file's content without its trailing newline.
fn read_token_file(path: &Path) -> Result<String, AdminError> {
    use std::io::Read;
    let cannot = |e: std::io::Error| {
        invalid(
            "admin.token_file",
            format!("cannot read {}: {e}", path.display()),
        )
    };
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    // One byte past the limit tells "too large" apart from "exactly at the limit".
    file.take(MAX_TOKEN_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_TOKEN_FILE {
        return Err(invalid(
            "admin.token_file",
            format!("{} is over {MAX_TOKEN_FILE} bytes", path.display()),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        invalid(
            "admin.token_file",
            format!("{} is not UTF-8 text", path.display()),
        )
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// The host part of a `Host` value (`name:port`, `[v6]:port`), lowercased.
fn host_name(host: &str) -> String {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn known_host(guard: &Guard, host: &str) -> bool {
    let name = host_name(host);
    name.parse::<IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || guard.allowed_hosts.iter().any(|h| h == "*" || *h == name)
}

/// The `scheme://authority` a browser sends as `Origin`, from a `Referer` URL.
fn origin_of(url: &str) -> &str {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let end = scheme
        .len()
        .saturating_add("://".len())
        .saturating_add(authority.len());
    url.get(..end).unwrap_or(url)
}

/// Why a state-changing request is refused as cross-site, if it is.
fn cross_site(headers: &HeaderMap, host: Option<&str>) -> Option<String> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let claimed = text(header::ORIGIN).or_else(|| text(header::REFERER).map(origin_of));
    match (claimed, host) {
        (Some(origin), Some(host)) => {
            let own = [format!("http://{host}"), format!("https://{host}")];
            (!own.iter().any(|o| o.eq_ignore_ascii_case(origin))).then(|| {
                format!(
                    "cross-origin request refused: {:?} is not this endpoint's origin (http://{})",
                    clip(origin),
                    clip(host)
                )
            })
        }
        (Some(_), None) => Some("cross-origin request refused: no Host header".into()),
        (None, _) => {
            let form = text(header::CONTENT_TYPE).is_some_and(|t| {
                let t = t.to_ascii_lowercase();
                [
                    "application/x-www-form-urlencoded",
                    "multipart/form-data",
                    "text/plain",
                ]
                .iter()
                .any(|f| t.starts_with(f))
            });
            form.then(|| {
                "a form-encoded POST without Origin or Referer is refused (cross-site form \
                 protection); these endpoints take no body: send none"
                    .into()
            })
        }
    }
}

/// Host and origin checks, before routing (the token is checked per route afterwards).
pub(super) async fn check_request(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(host) = host
        && !known_host(&guard, host)
    {
        let message = format!(
            "Host {:?} is not a name of this endpoint; add it to admin.allowed_hosts",
            clip(host)
        );
        return error(StatusCode::FORBIDDEN, message);
    }
    if !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) && let Some(message) = cross_site(headers, host)
    {
        return error(StatusCode::FORBIDDEN, message);
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(listen: &str) -> AdminSettings {
        AdminSettings {
            listen: listen.into(),
            ..AdminSettings::default()
        }
    }

    #[test]
    fn a_non_loopback_listener_needs_a_token_from_exactly_one_source() {
        let err = settings("0.0.0.0:6480").resolve_token(None).unwrap_err();
        assert!(err.to_string().contains("not a loopback address"), "{err}");
        assert_eq!(
            settings("127.0.0.1:6480").resolve_token(None).unwrap(),
            None
        );
        assert_eq!(settings("[::1]:6480").resolve_token(None).unwrap(), None);
        let from_env = settings("0.0.0.0:6480").resolve_token(Some("e".into()));
        assert_eq!(from_env.unwrap().as_deref(), Some("e"));
        let mut both = settings("0.0.0.0:6480");
        both.token = Some("t".into());
        let err = both.resolve_token(Some("e".into())).unwrap_err();
        assert!(err.to_string().contains("only one of"), "{err}");
        let empty = settings("0.0.0.0:6480").resolve_token(Some(String::new()));
        assert!(empty.unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn a_token_file_loses_its_trailing_newline() {
        let path = std::env::temp_dir().join(format!("pgward-token-{}", std::process::id()));
        std::fs::write(&path, "s3cret\r\n").unwrap();
        let mut s = settings("0.0.0.0:6480");
        s.token_file = Some(path.clone());
        assert_eq!(s.resolve_token(None).unwrap().as_deref(), Some("s3cret"));
        std::fs::remove_file(&path).unwrap();
        let err = s.resolve_token(None).unwrap_err().to_string();
        assert!(err.starts_with("admin.token_file: cannot read"), "{err}");
    }

    #[test]
    fn a_token_file_over_4_kib_or_not_text_is_refused() {
        let path = std::env::temp_dir().join(format!("pgward-bigtoken-{}", std::process::id()));
        let mut s = settings("0.0.0.0:6480");
        s.token_file = Some(path.clone());
        std::fs::write(&path, "t".repeat(4096)).unwrap();
        assert_eq!(s.resolve_token(None).unwrap().map(|t| t.len()), Some(4096));
        std::fs::write(&path, "t".repeat(4097)).unwrap();
        let err = s.resolve_token(None).unwrap_err().to_string();
        assert!(err.contains("over 4096 bytes"), "{err}");
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        let err = s.resolve_token(None).unwrap_err().to_string();
        assert!(err.contains("not UTF-8"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn hosts_are_ip_literals_localhost_or_listed() {
        let mut s = settings("127.0.0.1:6480");
        s.allowed_hosts = vec!["Pgward.Internal".into()];
        let guard = Guard::new(&s).unwrap();
        for ok in [
            "127.0.0.1:6480",
            "10.1.2.3",
            "[::1]:6480",
            "localhost:6480",
            "a.localhost",
            "pgward.internal:6480",
            "PGWARD.internal.",
        ] {
            assert!(known_host(&guard, ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:6480",
            "127.0.0.1.nip.io",
            "localhost.evil",
        ] {
            assert!(!known_host(&guard, refused), "{refused}");
        }
    }

    #[test]
    fn posts_from_another_origin_or_as_a_bare_form_are_cross_site() {
        let headers = |pairs: &[(header::HeaderName, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(name.clone(), value.parse().unwrap());
            }
            map
        };
        let host = Some("127.0.0.1:6480");
        let evil = headers(&[(header::ORIGIN, "http://evil.example")]);
        assert!(cross_site(&evil, host).is_some());
        let own = headers(&[(header::ORIGIN, "http://127.0.0.1:6480")]);
        assert!(cross_site(&own, host).is_none());
        let null = headers(&[(header::ORIGIN, "null")]);
        assert!(cross_site(&null, host).is_some());
        let referer = headers(&[(header::REFERER, "http://evil.example/page?x")]);
        assert!(cross_site(&referer, host).is_some());
        let own_page = headers(&[(header::REFERER, "http://127.0.0.1:6480/#token=x")]);
        assert!(cross_site(&own_page, host).is_none());
        let form = headers(&[(header::CONTENT_TYPE, "text/plain;charset=utf-8")]);
        assert!(cross_site(&form, host).is_some());
        assert!(
            cross_site(&HeaderMap::new(), host).is_none(),
            "curl-style POST"
        );
    }
}
