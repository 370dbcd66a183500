//! The GraphQL subscription source (`type = "graphql_subscription"`): a subscription over
//! WebSocket, with the `graphql-transport-ws` protocol or the older
//! `subscriptions-transport-ws`.
//!
//! A kind of its own rather than a mode of `graphql`: the polled GraphQL source is a walk of
//! pages under the HTTP policy (pagination, watermark, conditional requests), while a
//! subscription is a long-lived connection with a reconnect loop, like the WebSocket source,
//! whose handshake (size caps, `connect_timeout`, no redirects) and bounded sends it reuses.
//!
//! `config.rs` is the table and its checks; `protocol.rs` the two protocols' messages;
//! `records.rs` turns an execution result into records; `source.rs` is the connection loop
//! (`connection_init` with the auth payload, `connection_ack`, `subscribe` with the stored
//! position in its variables, `next`/`error`/`complete`, ping/pong, reconnects).

mod config;
mod protocol;
mod records;
mod source;

pub use config::GraphqlSubscriptionConfig;
pub use protocol::Protocol;
pub use source::SubscriptionSource;
