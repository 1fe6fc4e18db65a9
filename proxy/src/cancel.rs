//! The cancel-key registry: a CancelRequest is forwarded only for a key a live session of this proxy
//! relayed.

/// The BackendKeyData bodies (pid + secret) of live sessions: a CancelRequest is forwarded only for a key
/// this proxy relayed. The server's key is passed to the client unchanged.
#[derive(Debug, Default)]
pub struct CancelKeys(std::sync::Mutex<std::collections::HashSet<Vec<u8>>>);

impl CancelKeys {
    fn set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<Vec<u8>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session relayed `key` (its BackendKeyData body).
    pub fn insert(&self, key: &[u8]) {
        self.set().insert(key.to_vec());
    }

    /// The session that relayed `key` ended.
    pub fn remove(&self, key: &[u8]) {
        self.set().remove(key);
    }

    /// Whether `key` belongs to a live session.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.set().contains(key)
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.set().len()
    }

    /// Whether no key is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
