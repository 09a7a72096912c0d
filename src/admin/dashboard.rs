//! The ops dashboard: `GET /` on the admin endpoint serves one self-contained HTML page
//! (`dashboard.html`, embedded in the binary; no build step, nothing loaded from elsewhere).
//! The page carries no data, so it is served without the token; its script reads
//! `/stats/queries`, `/rules`, `/cache` and `/healthz` every 2 seconds, sending the token from
//! the page URL (`/#token=...` or `/?token=...`) as `Authorization: Bearer`, so the data
//! endpoints stay guarded exactly as before.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The page, as shipped in the binary.
pub const PAGE: &str = include_str!("dashboard.html");

/// The browser may run the page's own inline script and style and fetch from the admin
/// endpoint itself; nothing else (no other origin, no framing, no referrer carrying a token).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the dashboard page.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::PAGE;

    #[test]
    fn page_is_self_contained() {
        for external in [
            "src=\"http",
            "href=\"http",
            "src=\"//",
            "href=\"//",
            "@import",
        ] {
            assert!(
                !PAGE.contains(external),
                "the dashboard must not load {external}..."
            );
        }
    }

    #[test]
    fn page_has_the_stable_ids_tests_and_scripts_rely_on() {
        for id in [
            "id=\"fingerprints\"",
            "id=\"rules\"",
            "id=\"cache-size\"",
            "id=\"client-connections\"",
            "id=\"reload-error\"",
            "data-fingerprint",
        ] {
            assert!(PAGE.contains(id), "missing {id}");
        }
    }

    #[test]
    fn server_data_never_goes_through_html_parsing() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!PAGE.contains(sink), "the dashboard uses {sink}");
        }
    }
}
