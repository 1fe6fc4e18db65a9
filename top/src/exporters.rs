//! The optional sinks every sample goes to, whatever the mode: `--otlp` and `--prometheus`.

use std::time::Duration;

use tokio_postgres::config::Host;

use crate::conninfo::Target;
use crate::error::TopError;
use crate::otlp::OtlpExport;
use crate::prometheus::PrometheusExport;
use crate::sample::Snapshot;

/// The configured sinks.
#[derive(Debug, Default)]
pub struct Exporters {
    otlp: Option<OtlpExport>,
    prometheus: Option<PrometheusExport>,
}

impl Exporters {
    /// Sets up what the flags ask for; reports the Prometheus address on stderr.
    ///
    /// # Errors
    /// [`TopError::Otlp`] / [`TopError::Prometheus`] when a sink cannot start.
    pub fn start(
        target: &Target,
        otlp: bool,
        lock_threshold: Duration,
        prometheus: Option<std::net::SocketAddr>,
    ) -> Result<Exporters, TopError> {
        let otlp = if otlp {
            let host = match target.config.get_hosts().first() {
                Some(Host::Tcp(h)) => h.clone(),
                #[cfg(unix)]
                Some(Host::Unix(p)) => p.display().to_string(),
                None => target.config.get_hostaddrs().first().map(ToString::to_string).unwrap_or_default(),
            };
            let port = target.config.get_ports().first().copied().unwrap_or(5432);
            Some(OtlpExport::from_env(&host, port, lock_threshold)?)
        } else {
            None
        };
        let prometheus = match prometheus {
            Some(addr) => {
                let p = PrometheusExport::start(addr)?;
                eprintln!("sqlcommenter top: Prometheus metrics on http://{}/metrics", p.addr());
                Some(p)
            }
            None => None,
        };
        Ok(Exporters { otlp, prometheus })
    }

    /// Records a snapshot, or a failed sample (`None`).
    pub fn record(&mut self, snapshot: Option<&Snapshot>) {
        if let Some(p) = &self.prometheus {
            p.record(snapshot);
        }
        if let (Some(o), Some(s)) = (&mut self.otlp, snapshot) {
            o.record(s);
        }
    }

    /// Flushes the OTLP exporter.
    ///
    /// # Errors
    /// [`TopError::Otlp`] when the final export failed.
    pub fn finish(self) -> Result<(), TopError> {
        match self.otlp {
            Some(o) => o.shutdown(),
            None => Ok(()),
        }
    }
}
