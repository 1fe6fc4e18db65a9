//! diesel-async's pools (deadpool, bb8) of [`TracedPgConnection`]s.

use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use futures_util::FutureExt;

use crate::{Config, TracedPgConnection};

/// A connection manager for diesel-async's deadpool or bb8 pool whose connections are
/// [`TracedPgConnection`]s with `config`.
///
/// The pool's checkout ping (`RecyclingMethod::Verified`, `SELECT 1`) runs in the checking-out task, so it
/// already carries that task's context (the write pipelined with the ping).
pub fn manager(url: impl Into<String>, config: &Config) -> AsyncDieselConnectionManager<TracedPgConnection> {
    let mut setup = ManagerConfig::default();
    let config = config.clone();
    setup.custom_setup = Box::new(move |url| {
        let config = config.clone();
        let url = url.to_owned();
        async move { TracedPgConnection::establish_with(&url, &config).await }.boxed()
    });
    AsyncDieselConnectionManager::new_with_config(url, setup)
}
