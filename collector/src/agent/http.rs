//! `/metrics`, `/healthz` and `/readyz` over HTTP/1.1.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::reader::unix_seconds;

/// Whether the agent is alive and ready, as the probes see it.
#[derive(Debug)]
pub struct Health {
    ready: AtomicBool,
    /// When the last read finished, or when the agent started.
    last_read: AtomicU64,
    /// Reads further apart than this make the agent unhealthy.
    stale_after: u64,
    /// Scrapes of `/metrics` begun, each one's ticket.
    scrapes_begun: AtomicU64,
    /// One past the highest ticket of a scrape that finished.
    scrapes_done: AtomicU64,
    /// When the last scrape began (unix seconds).
    last_scrape_at: AtomicU64,
    scraped: tokio::sync::Notify,
}

impl Health {
    /// Not ready yet; unhealthy if no read happens within three intervals
    /// (plus a minute for the inventory's first listing).
    pub fn new(interval_seconds: u32) -> Self {
        Self {
            ready: AtomicBool::new(false),
            last_read: AtomicU64::new(unix_seconds() + 60),
            stale_after: 3 * u64::from(interval_seconds),
            scrapes_begun: AtomicU64::new(0),
            scrapes_done: AtomicU64::new(0),
            last_scrape_at: AtomicU64::new(0),
            scraped: tokio::sync::Notify::new(),
        }
    }

    /// Scrapes of `/metrics` begun so far.
    pub fn scrapes(&self) -> u64 {
        self.scrapes_begun.load(Ordering::SeqCst)
    }

    /// Whether something scrapes the agent regularly: twice at least, the
    /// last time within a minute (a person's one `curl` is not a scraper
    /// worth waiting for).
    pub fn is_scraped(&self) -> bool {
        let last = self.last_scrape_at.load(Ordering::Relaxed);
        self.scrapes() >= 2 && unix_seconds().saturating_sub(last) <= 60
    }

    /// Waits until a scrape begun after [`Health::scrapes`] returned
    /// `after` has finished: what the metrics held at that moment is then
    /// in the scraper's hands.
    pub async fn scraped_after(&self, after: u64) {
        loop {
            let notified = self.scraped.notified();
            if self.scrapes_done.load(Ordering::SeqCst) > after {
                return;
            }
            notified.await;
        }
    }

    /// The inventory is loaded and the table is being read.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// An interval's read finished.
    pub fn read_done(&self) {
        self.last_read.store(unix_seconds(), Ordering::Relaxed);
    }

    fn healthy(&self) -> bool {
        unix_seconds() <= self.last_read.load(Ordering::Relaxed) + self.stale_after
    }
}

/// Serve until the listener fails.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>, health: Arc<Health>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "cannot accept an HTTP connection");
                continue;
            }
        };
        let registry = registry.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(&request, &registry, &health);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
    }
}

fn respond(
    request: &Request<Incoming>,
    registry: &Registry,
    health: &Health,
) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    };
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match request.uri().path() {
        "/metrics" => {
            let ticket = health.scrapes_begun.fetch_add(1, Ordering::SeqCst);
            health
                .last_scrape_at
                .store(unix_seconds(), Ordering::Relaxed);
            let mut body = String::new();
            if let Err(error) = prometheus_client::encoding::text::encode(&mut body, registry) {
                return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n"));
            }
            health.scrapes_done.fetch_max(ticket + 1, Ordering::SeqCst);
            health.scraped.notify_waiters();
            let openmetrics = request
                .headers()
                .get_all(hyper::header::ACCEPT)
                .iter()
                .any(|v| {
                    v.to_str()
                        .is_ok_and(|v| v.contains("application/openmetrics-text"))
                });
            let (body, content_type) = if openmetrics {
                (
                    body,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            } else {
                (
                    classic_text(&body),
                    "text/plain; version=0.0.4; charset=utf-8",
                )
            };
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(content_type),
            );
            response
        }
        "/healthz" if health.healthy() => text(StatusCode::OK, "ok\n".into()),
        "/healthz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no conntrack read finished for three intervals\n".into(),
        ),
        "/readyz" if health.ready.load(Ordering::Relaxed) && health.healthy() => {
            text(StatusCode::OK, "ready\n".into())
        }
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into()),
        _ => text(
            StatusCode::NOT_FOUND,
            "try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// OpenMetrics text as Prometheus' classic text format, for scrapers that
/// do not ask for OpenMetrics (curl, promtool): a counter family is named
/// after its `_total` samples, and `# UNIT` and `# EOF` are dropped.
fn classic_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line.starts_with("# HELP ") {
            help = Some(line);
            continue;
        }
        if let Some(declaration) = line.strip_prefix("# TYPE ") {
            let (name, kind) = declaration.split_once(' ').unwrap_or((declaration, ""));
            let renamed = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            if let Some(help) = help.take() {
                let text = help
                    .strip_prefix("# HELP ")
                    .and_then(|h| h.split_once(' '))
                    .map_or("", |(_, text)| text);
                out.push_str(&format!("# HELP {renamed} {text}\n"));
            }
            out.push_str(&format!("# TYPE {renamed} {kind}\n"));
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::classic_text;

    #[test]
    fn counters_are_named_after_their_samples_in_the_classic_format() {
        let openmetrics = "# HELP a_bytes Bytes.\n# TYPE a_bytes counter\n# UNIT a_bytes bytes\n\
                           a_bytes_total{x=\"1\"} 5\n# HELP g A gauge.\n# TYPE g gauge\ng 2\n# EOF\n";
        assert_eq!(
            classic_text(openmetrics),
            "# HELP a_bytes_total Bytes.\n# TYPE a_bytes_total counter\n\
             a_bytes_total{x=\"1\"} 5\n# HELP g A gauge.\n# TYPE g gauge\ng 2\n"
        );
    }
}
