//! Reading a consumer group member's assignment (the Kafka consumer protocol's
//! `ConsumerProtocolAssignment`), for the cluster view of `tributary status`.

/// Reads a member's assignment: the topics and partitions of the Kafka consumer protocol's
/// `ConsumerProtocolAssignment` (versions 0 to 3, and later ones, which keep its prefix):
/// int16 version, an array (int32 count, -1 for null) of topics, each a string (int16 length,
/// UTF-8) and an array of int32 partitions, then the user data (int32 length, -1 for null).
/// Bytes after the user data (fields of a later version) are ignored.
///
/// # Errors
/// The bytes end early, a count or length is negative (other than -1 for null) or larger
/// than what is left, a topic name is not UTF-8, or the version is negative: what and where.
pub fn decode_assignment(bytes: &[u8]) -> Result<Vec<(String, Vec<i32>)>, String> {
    let mut reader = ProtocolReader { bytes, at: 0 };
    let version = reader.i16("the version")?;
    if version < 0 {
        return Err(format!("version {version} is negative"));
    }
    let topic_count = reader.count("the topic count", 2 + 4)?;
    let mut topics = Vec::with_capacity(topic_count);
    for _ in 0..topic_count {
        let length = reader.i16("a topic name's length")?;
        let length = usize::try_from(length)
            .map_err(|_| format!("a topic name's length is {length} at byte {}", reader.at))?;
        let name = reader.take(length, "a topic name")?;
        let name = std::str::from_utf8(name)
            .map_err(|_| format!("a topic name is not UTF-8 at byte {}", reader.at - length))?
            .to_owned();
        let partition_count = reader.count("a partition count", 4)?;
        let mut partitions = Vec::with_capacity(partition_count);
        for _ in 0..partition_count {
            partitions.push(reader.i32("a partition")?);
        }
        topics.push((name, partitions));
    }
    let user_data = reader.i32("the user data's length")?;
    if user_data < -1 {
        return Err(format!("the user data's length is {user_data}"));
    }
    reader.take(usize::try_from(user_data).unwrap_or(0), "the user data")?;
    Ok(topics)
}

/// Big-endian reads from the front of a byte slice that fail instead of panicking.
struct ProtocolReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> ProtocolReader<'a> {
    fn take(&mut self, length: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(length)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "{what} needs {length} bytes at byte {} of {}",
                    self.at,
                    self.bytes.len()
                )
            })?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn i16(&mut self, what: &str) -> Result<i16, String> {
        let bytes = self.take(2, what)?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn i32(&mut self, what: &str) -> Result<i32, String> {
        let bytes = self.take(4, what)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// An array's element count (-1, a null array, is none), refused when the bytes left
    /// cannot hold that many elements of at least `element_bytes` each: garbage must not make
    /// the decoder allocate gigabytes.
    fn count(&mut self, what: &str, element_bytes: usize) -> Result<usize, String> {
        let count = self.i32(what)?;
        if count == -1 {
            return Ok(0);
        }
        let count = usize::try_from(count).map_err(|_| format!("{what} is {count}"))?;
        let left = self.bytes.len() - self.at;
        if count > left / element_bytes {
            return Err(format!(
                "{what} is {count}, more than the {left} bytes left can hold"
            ));
        }
        Ok(count)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `ConsumerProtocolAssignment` of `version` with `topics` and `user_data`.
    pub(crate) fn encode(
        version: i16,
        topics: &[(&str, &[i32])],
        user_data: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut bytes = version.to_be_bytes().to_vec();
        bytes.extend((topics.len() as i32).to_be_bytes());
        for (topic, partitions) in topics {
            bytes.extend((topic.len() as i16).to_be_bytes());
            bytes.extend(topic.as_bytes());
            bytes.extend((partitions.len() as i32).to_be_bytes());
            for partition in *partitions {
                bytes.extend(partition.to_be_bytes());
            }
        }
        match user_data {
            None => bytes.extend((-1i32).to_be_bytes()),
            Some(data) => {
                bytes.extend((data.len() as i32).to_be_bytes());
                bytes.extend(data);
            }
        }
        bytes
    }

    #[test]
    fn assignments_of_every_version_are_read() {
        let topics: &[(&str, &[i32])] = &[
            ("tributary.feeds.assignments.wiki", &[0]),
            ("tributary.feeds.assignments.ticks", &[0, 1]),
        ];
        for version in 0..=3 {
            for user_data in [None, Some(&b"sticky"[..])] {
                let decoded = decode_assignment(&encode(version, topics, user_data)).unwrap();
                assert_eq!(
                    decoded,
                    [
                        ("tributary.feeds.assignments.wiki".to_owned(), vec![0]),
                        ("tributary.feeds.assignments.ticks".to_owned(), vec![0, 1]),
                    ]
                );
            }
        }
        assert_eq!(decode_assignment(&encode(1, &[], None)).unwrap(), []);
        // A later version may append fields: they are ignored.
        let mut later = encode(4, topics, None);
        later.extend([0, 0, 0, 7]);
        assert_eq!(decode_assignment(&later).unwrap().len(), 2);
        // A null topic array is no topic.
        let null_topics = [0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(decode_assignment(&null_topics).unwrap(), []);
    }

    #[test]
    fn truncated_assignments_are_errors_at_every_length() {
        let whole = encode(
            3,
            &[("tributary.feeds.assignments.wiki", &[0, 5])],
            Some(b"x"),
        );
        for length in 0..whole.len() {
            let error = decode_assignment(&whole[..length]).expect_err("truncated");
            assert!(
                error.contains("needs") || error.contains("bytes left"),
                "{length}: {error}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error_never_a_panic_or_a_huge_allocation() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0xff, 0xff, 0, 0, 0, 0], "version -1"),
            (
                vec![0, 0, 0x7f, 0xff, 0xff, 0xff],
                "topic count is 2147483647",
            ),
            (vec![0, 0, 0xff, 0xff, 0xff, 0xfe], "topic count is -2"),
            (
                vec![0, 0, 0, 0, 0, 1, 0xff, 0xfe, 0, 0, 0, 0],
                "length is -2",
            ),
            (
                vec![0, 0, 0, 0, 0, 1, 0, 2, 0xc3, 0x28, 0, 0, 0, 0],
                "not UTF-8",
            ),
            (
                vec![0, 0, 0, 0, 0, 1, 0, 1, b'a', 0x10, 0, 0, 0, 0, 0, 0, 0],
                "partition count is 268435456",
            ),
            (vec![0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xf0], "-16"),
        ];
        for (bytes, expected) in cases {
            let error = decode_assignment(&bytes).expect_err("garbage");
            assert!(error.contains(expected), "{bytes:?}: {error}");
        }
        // Pseudo-random bytes: any answer but a panic.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for length in 0..400 {
            let bytes: Vec<u8> = (0..length)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = decode_assignment(&bytes);
        }
    }
}
