//! The refresh token of an OAuth2 refresh-token grant (RFC 6749 §6), kept where the source's
//! positions are kept.
//!
//! Many providers rotate refresh tokens: each token response carries a new one and the old
//! one stops working (RFC 9700 §4.14.2). A daemon that kept only the configured token would
//! need a new login after its first restart. So each rotated token is written to the position
//! store (the file store or the Kafka store, under `<source>/oauth2-refresh-token`) as soon as
//! it arrives, and a source that starts takes the stored token over the configured one. In a
//! cluster, the replica that owns the source owns its token too.

use std::sync::{Arc, Mutex, OnceLock};

use secrecy::{ExposeSecret, SecretString};

use crate::{record::Position, state::checkpoint::CheckpointStore};

/// The store key of `source`'s refresh token. Source names have no `/`, so it never names a
/// source, and listings of positions leave it out ([`is_credentials_key`]).
pub fn store_key(source: &str) -> String {
    format!("{source}/oauth2-refresh-token")
}

/// Whether a store key holds credentials (a refresh token) rather than a source's position.
pub fn is_credentials_key(key: &str) -> bool {
    key.contains('/')
}

/// The current refresh token, and where a rotated one is written.
pub struct RefreshTokens {
    current: Mutex<SecretString>,
    keeper: OnceLock<Keeper>,
}

struct Keeper {
    store: Arc<dyn CheckpointStore>,
    key: String,
}

impl std::fmt::Debug for RefreshTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshTokens")
            .field("kept", &self.keeper.get().map(|k| k.key.as_str()))
            .finish_non_exhaustive()
    }
}

impl RefreshTokens {
    /// Starts from the configured token.
    pub fn new(configured: SecretString) -> Self {
        RefreshTokens {
            current: Mutex::new(configured),
            keeper: OnceLock::new(),
        }
    }

    /// The token to send now.
    pub fn current(&self) -> SecretString {
        self.lock().clone()
    }

    /// Takes the token stored by an earlier run over the configured one.
    pub fn resume(&self, stored: &str) {
        *self.lock() = SecretString::from(stored.to_owned());
    }

    /// From now on, rotated tokens are written to `store` under `key`.
    pub fn keep_in(&self, store: Arc<dyn CheckpointStore>, key: String) {
        let _ = self.keeper.set(Keeper { store, key });
    }

    /// A token response carried `fresh`: use it from now on and, when it is a new one, store
    /// it before the access token it came with is used.
    ///
    /// # Errors
    /// The store cannot be written: the token is used in memory, but a restart would start
    /// from the previous one, which the provider may no longer accept.
    pub async fn rotate(&self, fresh: SecretString) -> Result<(), String> {
        {
            let mut current = self.lock();
            if current.expose_secret() == fresh.expose_secret() {
                return Ok(());
            }
            *current = fresh.clone();
        }
        let Some(keeper) = self.keeper.get() else {
            return Ok(());
        };
        keeper
            .store
            .commit(vec![(
                keeper.key.clone(),
                Position(Arc::from(fresh.expose_secret())),
            )])
            .await
            .map_err(|e| format!("the rotated refresh token could not be stored: {e}"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SecretString> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_keys_never_name_a_source() {
        assert_eq!(store_key("crm"), "crm/oauth2-refresh-token");
        assert!(is_credentials_key(&store_key("crm")));
        assert!(!is_credentials_key("crm"));
        assert!(!is_credentials_key("wiki.recent-change_1"));
    }

    #[tokio::test]
    async fn a_rotated_token_replaces_the_current_one_and_the_same_token_is_not_stored_again() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn CheckpointStore> = Arc::new(Arc::new(
            crate::state::checkpoint::FileStore::open(dir.path()).unwrap(),
        ));
        let tokens = RefreshTokens::new(SecretString::from("configured"));
        tokens.keep_in(Arc::clone(&store), store_key("crm"));
        tokens.rotate(SecretString::from("second")).await.unwrap();
        assert_eq!(tokens.current().expose_secret(), "second");
        let stored = store.acquire(&store_key("crm")).await.unwrap().unwrap();
        assert_eq!(stored.as_str(), "second");
        let again = RefreshTokens::new(SecretString::from("configured"));
        again.resume(stored.as_str());
        assert_eq!(again.current().expose_secret(), "second");
    }
}
