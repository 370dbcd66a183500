//! The process-wide rustls crypto provider.
//!
//! Both aws-lc-rs and ring end up linked (through different HTTP stacks), and rustls then
//! refuses to pick one: the first HTTPS handshake panics unless a provider was installed for
//! the process. [`install_crypto_provider`] installs aws-lc-rs once; every entry point that may
//! open an HTTPS connection calls it.

use std::sync::Once;

/// Installs aws-lc-rs as the process's rustls crypto provider, once. A provider installed
/// earlier by the embedding program is kept. Called wherever a TLS client is built (rustls
/// panics on a handshake without a provider), so that a source or a client made outside the
/// daemon's start, as in tests or an embedding program, works too.
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // `Err` means another provider is already installed: that one stays, as documented.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}
