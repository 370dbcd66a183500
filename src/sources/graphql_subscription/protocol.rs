//! The two GraphQL over WebSocket protocols, as messages: what the client sends and what the
//! server's messages mean. Pure logic, no I/O.
//!
//! - `graphql-transport-ws` (the `graphql-ws` library, and the GraphQL over WebSocket draft of
//!   the GraphQL over HTTP working group): `connection_init` → `connection_ack`, then
//!   `subscribe` → `next`* → `complete` | `error`; `ping`/`pong` both ways; close codes 4400
//!   (bad request), 4401 (unauthorized), 4403 (forbidden), 4406 (subprotocol not acceptable),
//!   4408 (init timeout), 4409 (subscriber exists), 4429 (too many init requests), 4500.
//! - `subscriptions-transport-ws` (Apollo's older library, subprotocol `graphql-ws`):
//!   `connection_init` → `connection_ack` (or `connection_error`), `ka` keep-alives, then
//!   `start` → `data`* → `complete` | `error`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{json, value::RawValue, Value};

/// `protocol`: which GraphQL over WebSocket protocol the server speaks.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// `graphql-transport-ws` (the default).
    #[default]
    GraphqlTransportWs,
    /// `subscriptions-transport-ws` (subprotocol `graphql-ws`), the older protocol.
    SubscriptionsTransportWs,
}

/// The one operation id this source uses per connection.
pub const OPERATION_ID: &str = "1";

impl Protocol {
    /// The `Sec-WebSocket-Protocol` value.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Protocol::GraphqlTransportWs => "graphql-transport-ws",
            Protocol::SubscriptionsTransportWs => "graphql-ws",
        }
    }

    /// `connection_init` with `payload` (the auth parameters).
    pub fn connection_init(self, payload: &Value) -> String {
        json!({"type": "connection_init", "payload": payload}).to_string()
    }

    /// The message that starts the subscription: `subscribe` (or `start`) with the query, its
    /// variables and operation name.
    pub fn subscribe(
        self,
        query: &str,
        variables: &serde_json::Map<String, Value>,
        operation_name: Option<&str>,
    ) -> String {
        let kind = match self {
            Protocol::GraphqlTransportWs => "subscribe",
            Protocol::SubscriptionsTransportWs => "start",
        };
        let mut payload = json!({"query": query, "variables": variables});
        if let Some(name) = operation_name {
            payload["operationName"] = Value::String(name.to_owned());
        }
        json!({"id": OPERATION_ID, "type": kind, "payload": payload}).to_string()
    }

    /// The answer to a server `ping` (only `graphql-transport-ws` has one).
    pub fn pong(self) -> Option<String> {
        (self == Protocol::GraphqlTransportWs).then(|| r#"{"type":"pong"}"#.to_owned())
    }

    /// Whether a close code means retrying cannot help (the request, the credentials or the
    /// protocol are refused): 4400, 4401, 4403, 4406, and RFC 6455's 1003 and 1008.
    pub fn is_permanent_close(self, code: u16) -> bool {
        matches!(code, 4400 | 4401 | 4403 | 4406 | 1003 | 1008)
    }
}

/// A server message.
#[derive(Debug)]
pub enum ServerMessage<'a> {
    /// `connection_ack`.
    ConnectionAck,
    /// `ping`: answer with a pong.
    Ping,
    /// `pong`, or the older protocol's `ka` keep-alive.
    KeepAlive,
    /// `next` (or `data`): one execution result of the operation `id`.
    Next {
        /// The operation id.
        id: Cow<'a, str>,
        /// The execution result (`{"data": …, "errors": […]}`).
        payload: &'a RawValue,
    },
    /// `error` for an operation (its GraphQL errors), or `connection_error`.
    Error {
        /// The operation id, when the error is an operation's.
        id: Option<Cow<'a, str>>,
        /// The errors as sent.
        payload: Option<&'a RawValue>,
    },
    /// `complete`: the server ended the operation.
    Complete {
        /// The operation id.
        id: Cow<'a, str>,
    },
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
}

/// Reads one text message of `protocol`.
///
/// # Errors
/// The message is not JSON, has no `type`, has a type this protocol does not send to clients,
/// or lacks the `id`/`payload` its type needs; the text says which.
pub fn parse(protocol: Protocol, text: &str) -> Result<ServerMessage<'_>, String> {
    let envelope: Envelope<'_> = serde_json::from_str(text)
        .map_err(|e| format!("a server message is not a protocol message: {e}"))?;
    fn id<'a>(envelope: &Envelope<'a>) -> Result<Cow<'a, str>, String> {
        envelope
            .id
            .clone()
            .ok_or_else(|| format!("a `{}` message has no `id`", envelope.kind))
    }
    let transport = protocol == Protocol::GraphqlTransportWs;
    match envelope.kind.as_ref() {
        "connection_ack" => Ok(ServerMessage::ConnectionAck),
        "ping" if transport => Ok(ServerMessage::Ping),
        "pong" if transport => Ok(ServerMessage::KeepAlive),
        "ka" if !transport => Ok(ServerMessage::KeepAlive),
        "next" if transport => next(&envelope, id(&envelope)?),
        "data" if !transport => next(&envelope, id(&envelope)?),
        "error" => Ok(ServerMessage::Error {
            id: envelope.id.clone(),
            payload: envelope.payload,
        }),
        "connection_error" if !transport => Ok(ServerMessage::Error {
            id: None,
            payload: envelope.payload,
        }),
        "complete" => Ok(ServerMessage::Complete { id: id(&envelope)? }),
        other => Err(format!(
            "the server sent a `{other}` message, which {} does not send to clients",
            protocol.subprotocol()
        )),
    }
}

fn next<'a>(envelope: &Envelope<'a>, id: Cow<'a, str>) -> Result<ServerMessage<'a>, String> {
    let payload = envelope
        .payload
        .ok_or_else(|| format!("a `{}` message has no `payload`", envelope.kind))?;
    Ok(ServerMessage::Next { id, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_follow_each_protocol() {
        let transport = Protocol::GraphqlTransportWs;
        let init: Value =
            serde_json::from_str(&transport.connection_init(&json!({"authorization": "x"})))
                .unwrap();
        assert_eq!(
            init,
            json!({"type": "connection_init", "payload": {"authorization": "x"}})
        );
        let mut variables = serde_json::Map::new();
        variables.insert("after".into(), json!(41));
        let subscribe: Value = serde_json::from_str(&transport.subscribe(
            "subscription($after: Int) { events(after: $after) { seq } }",
            &variables,
            Some("Events"),
        ))
        .unwrap();
        assert_eq!(subscribe["type"], "subscribe");
        assert_eq!(subscribe["id"], OPERATION_ID);
        assert_eq!(subscribe["payload"]["variables"]["after"], 41);
        assert_eq!(subscribe["payload"]["operationName"], "Events");
        assert_eq!(transport.pong().as_deref(), Some(r#"{"type":"pong"}"#));

        let legacy = Protocol::SubscriptionsTransportWs;
        assert_eq!(legacy.subprotocol(), "graphql-ws");
        let start: Value =
            serde_json::from_str(&legacy.subscribe("subscription { x }", &variables, None))
                .unwrap();
        assert_eq!(start["type"], "start");
        assert!(start["payload"].get("operationName").is_none());
        assert_eq!(legacy.pong(), None);
    }

    #[test]
    fn server_messages_are_read_per_protocol() {
        let transport = Protocol::GraphqlTransportWs;
        assert!(matches!(
            parse(transport, r#"{"type":"connection_ack"}"#),
            Ok(ServerMessage::ConnectionAck)
        ));
        assert!(matches!(
            parse(transport, r#"{"type":"ping","payload":{}}"#),
            Ok(ServerMessage::Ping)
        ));
        let text = r#"{"id":"1","type":"next","payload":{"data":{"e":{"seq":1}}}}"#;
        match parse(transport, text).unwrap() {
            ServerMessage::Next { id, payload } => {
                assert_eq!(id, "1");
                assert_eq!(payload.get(), r#"{"data":{"e":{"seq":1}}}"#);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(
                transport,
                r#"{"id":"1","type":"error","payload":[{"message":"no"}]}"#
            ),
            Ok(ServerMessage::Error {
                id: Some(_),
                payload: Some(_)
            })
        ));
        assert!(matches!(
            parse(transport, r#"{"id":"1","type":"complete"}"#),
            Ok(ServerMessage::Complete { id }) if id == "1"
        ));
        // The older protocol's names are not this one's.
        assert!(parse(transport, r#"{"id":"1","type":"data","payload":{}}"#).is_err());
        assert!(parse(transport, r#"{"type":"ka"}"#).is_err());

        let legacy = Protocol::SubscriptionsTransportWs;
        assert!(matches!(
            parse(legacy, r#"{"type":"ka"}"#),
            Ok(ServerMessage::KeepAlive)
        ));
        assert!(matches!(
            parse(
                legacy,
                r#"{"id":"1","type":"data","payload":{"data":null}}"#
            ),
            Ok(ServerMessage::Next { .. })
        ));
        assert!(matches!(
            parse(
                legacy,
                r#"{"type":"connection_error","payload":{"message":"bad token"}}"#
            ),
            Ok(ServerMessage::Error { id: None, .. })
        ));
        assert!(parse(legacy, r#"{"type":"ping"}"#).is_err());
    }

    #[test]
    fn malformed_server_messages_are_errors() {
        let transport = Protocol::GraphqlTransportWs;
        for text in [
            "not json",
            "{}",
            r#"{"type":"next","payload":{}}"#,
            r#"{"type":"next","id":"1"}"#,
            r#"{"type":"complete"}"#,
            r#"{"type":"subscribe","id":"1"}"#,
        ] {
            assert!(parse(transport, text).is_err(), "{text}");
        }
    }

    #[test]
    fn refusals_are_permanent_and_the_rest_is_retried() {
        let transport = Protocol::GraphqlTransportWs;
        for code in [4400, 4401, 4403, 4406, 1008] {
            assert!(transport.is_permanent_close(code), "{code}");
        }
        for code in [1000, 1001, 1006, 1011, 4408, 4409, 4429, 4500] {
            assert!(!transport.is_permanent_close(code), "{code}");
        }
    }
}
