//! Polled GraphQL source: a query sent by `POST` (GraphQL over HTTP), walked page by page with
//! Relay cursor connections (`pageInfo { hasNextPage endCursor }`, the cursor passed as a
//! variable), under the same HTTP policy, watermark and resumable position as REST.

mod config;

pub use config::GraphqlConfig;
