//! Event time: the time a record says it happened, read from a field of the record and sent
//! as the Kafka record timestamp (CreateTime) and the `tributary.event_time` header.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::json::{text_of, Pointer};

/// How the `timestamp` field's value is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampUnit {
    /// An RFC 3339 text such as `2024-05-01T12:00:00.123Z` or `…+02:00` (default).
    #[default]
    Rfc3339,
    /// Seconds since the Unix epoch, a number (fractions kept to the millisecond) or a string
    /// of one.
    Seconds,
    /// Milliseconds since the Unix epoch, a number or a string of one.
    Milliseconds,
}

/// Where a record's event time is and how it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventTime {
    /// The field (RFC 6901 pointer into the record).
    pub pointer: Pointer,
    /// Its format.
    pub unit: TimestampUnit,
}

impl EventTime {
    /// The event time of `record` in milliseconds since the Unix epoch.
    ///
    /// # Errors
    /// A sentence naming the field when it is missing or not a time in `unit`.
    pub fn millis(&self, record: Option<&RawValue>) -> Result<i64, String> {
        let pointer = self.pointer.as_str();
        let value = record
            .and_then(|record| self.pointer.lookup(record))
            .ok_or_else(|| format!("the record has no event time at `{pointer}`"))?;
        let text = text_of(value);
        let millis = match self.unit {
            TimestampUnit::Rfc3339 => chrono::DateTime::parse_from_rfc3339(&text)
                .ok()
                .map(|time| time.timestamp_millis()),
            TimestampUnit::Seconds => text
                .parse::<f64>()
                .ok()
                .filter(|seconds| seconds.is_finite())
                .map(|seconds| (seconds * 1000.0).round() as i64),
            TimestampUnit::Milliseconds => text.parse::<i64>().ok().or_else(|| {
                text.parse::<f64>()
                    .ok()
                    .filter(|millis| millis.is_finite())
                    .map(|millis| millis.round() as i64)
            }),
        };
        match millis {
            Some(millis) if millis >= 0 => Ok(millis),
            _ => Err(format!(
                "the event time at `{pointer}` ({}) is not {}",
                value.get(),
                match self.unit {
                    TimestampUnit::Rfc3339 => "an RFC 3339 time",
                    TimestampUnit::Seconds => "a number of seconds since 1970 (UTC)",
                    TimestampUnit::Milliseconds => "a number of milliseconds since 1970 (UTC)",
                }
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unit: TimestampUnit) -> EventTime {
        EventTime {
            pointer: Pointer::parse("/t").unwrap(),
            unit,
        }
    }

    fn raw(text: &str) -> &RawValue {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn each_unit_reads_its_format() {
        let rfc = at(TimestampUnit::Rfc3339);
        assert_eq!(
            rfc.millis(Some(raw(r#"{"t":"2023-11-14T22:13:20.123Z"}"#))),
            Ok(1_700_000_000_123)
        );
        assert_eq!(
            rfc.millis(Some(raw(r#"{"t":"2023-11-14T23:13:20.123+01:00"}"#))),
            Ok(1_700_000_000_123)
        );
        let seconds = at(TimestampUnit::Seconds);
        assert_eq!(
            seconds.millis(Some(raw(r#"{"t":1700000000.5}"#))),
            Ok(1_700_000_000_500)
        );
        assert_eq!(
            seconds.millis(Some(raw(r#"{"t":"1700000000"}"#))),
            Ok(1_700_000_000_000)
        );
        let millis = at(TimestampUnit::Milliseconds);
        assert_eq!(
            millis.millis(Some(raw(r#"{"t":1700000000123}"#))),
            Ok(1_700_000_000_123)
        );
    }

    #[test]
    fn a_missing_or_malformed_time_is_an_error_naming_the_field() {
        let rfc = at(TimestampUnit::Rfc3339);
        let missing = rfc.millis(Some(raw(r#"{"x":1}"#))).unwrap_err();
        assert!(missing.contains("no event time at `/t`"), "{missing}");
        let wrong = rfc.millis(Some(raw(r#"{"t":"yesterday"}"#))).unwrap_err();
        assert!(wrong.contains("not an RFC 3339 time"), "{wrong}");
        let negative = at(TimestampUnit::Seconds)
            .millis(Some(raw(r#"{"t":-5}"#)))
            .unwrap_err();
        assert!(negative.contains("seconds since 1970"), "{negative}");
        assert!(rfc.millis(None).is_err());
    }
}
