//! Which control topic stands for which source, and how replicas tell each other apart.
//!
//! **The rule:** source `s` has its own control topic, `<cluster.topic>.<s>`
//! ([`crate::state::cluster::ClusterSection::source_control_topic`]), with one partition. The group's
//! cooperative-sticky assignor balances partition counts over the replicas, and since each
//! partition is exactly one source, it balances sources: ⌊S/R⌋ or ⌈S/R⌉ each once a
//! rebalance settles, and a membership change moves only the sources it must. The topic
//! depends on the source's name only, and each replica subscribes to the topics of its own
//! config's sources, so two replicas that run different configs (a rolling update that adds
//! or removes a source) still agree on where every source they share lives, and the assignor
//! only gives a source to a replica that has it: one source never has two owners.
//!
//! (Until this rule, sources shared the partitions of one control topic by
//! `crc32(name) mod partitions`, [`control_partition`]: several sources on one partition
//! always moved together, and the assignor balanced partitions, not sources.)
//!
//! **The fingerprint:** each replica puts a hash of its sources' settings into its client id
//! (`tributary/<replica>/<fingerprint>`), which the group coordinator lists for every member,
//! so a replica can see that others run a different config.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::sources::SourceConfig;

/// The control partition of `source` among `partitions` (at least 1) under the former rule
/// (see the module doc); the daemon no longer uses it.
pub fn control_partition(source: &str, partitions: i32) -> i32 {
    let partitions = u32::try_from(partitions.max(1)).unwrap_or(1);
    (crc32fast::hash(source.as_bytes()) % partitions) as i32
}

/// A short hash (16 hex digits) of the sources' names and settings, and of the content of the
/// files their record stages read (`transform_file`, `schema`). Secrets are not part of it
/// (they print as `[REDACTED]`), so it can be shown to other replicas.
pub fn fingerprint(sources: &BTreeMap<String, SourceConfig>) -> String {
    let mut hash = Sha256::new();
    for (name, config) in sources {
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update(format!("{config:?}").as_bytes());
        hash.update([0]);
        hash.update(crate::runtime::reload::source_files_digest(config).as_bytes());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..8])
}

/// The client id a replica joins the group with.
pub fn client_id(replica: &str, fingerprint: &str) -> String {
    format!("tributary/{replica}/{fingerprint}")
}

/// The replica and fingerprint in a member's client id (`None`: not a Tributary replica).
pub fn parse_client_id(client_id: &str) -> Option<(&str, &str)> {
    let rest = client_id.strip_prefix("tributary/")?;
    rest.rsplit_once('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_depends_on_the_name_and_the_count_only() {
        // CRC-32 (IEEE) of "wiki" is 0x22cddc06: the rule must not change between versions.
        assert_eq!(crc32fast::hash(b"wiki"), 0x22cd_dc06);
        assert_eq!(control_partition("wiki", 12), (0x22cd_dc06_u32 % 12) as i32);
        for partitions in [1, 2, 6, 12, 100] {
            for name in ["a", "wiki", "coinbase.ticks", "github-issues"] {
                let partition = control_partition(name, partitions);
                assert!((0..partitions).contains(&partition));
                assert_eq!(partition, control_partition(name, partitions));
            }
        }
        assert_eq!(control_partition("anything", 0), 0);
    }

    #[test]
    fn client_ids_round_trip() {
        let id = client_id("pod-7", "00ff");
        assert_eq!(parse_client_id(&id), Some(("pod-7", "00ff")));
        assert_eq!(parse_client_id("rdkafka"), None);
    }
}
