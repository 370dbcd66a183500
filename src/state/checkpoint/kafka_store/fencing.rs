//! Owner fencing: which writes of the positions topic a reader takes, and whether a claim
//! made this replica the owner.
//!
//! Every write carries the owner epoch of the acquisition it belongs to and the `owner` id
//! of the store that made that acquisition (random, one per opened store, so two replicas
//! configured with the same `cluster.replica` still differ). Per key, the reader keeps a
//! **fence**: the highest (epoch, owner) it has admitted. A write is admitted when
//! - its epoch is above the fence's (a new acquisition, or `tributary positions set`), or
//! - its epoch and owner are the fence's (the current owner's claim and later commits).
//!
//! Everything else is fenced: a lower epoch is an owner that lost the source, and the same
//! epoch from another owner is a claim that raced with the one admitted first (both read the
//! same epoch and claimed the next). The loser of such a race sees it when it reads its claim
//! back ([`claim_outcome`]) and claims again above it, so each admitted acquisition has a
//! strictly higher epoch than the one before.
//!
//! A tombstone (a `null` value, produced by hand) forgets the key's position but not its
//! fence: otherwise the next claim would start again at epoch 1 and a zombie of epoch 1 or
//! more would be read as the owner.

use std::collections::{BTreeMap, HashMap};

use super::{KafkaStoreConfig, StoredPosition};

/// The highest acquisition admitted for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Fence {
    /// Its owner epoch.
    pub(super) epoch: u64,
    /// The store that made it (`None` for records of versions that did not write one).
    pub(super) owner: Option<String>,
}

/// True when a write of `epoch` by `owner` passes `fence` (see the module doc).
pub(super) fn admits(fence: Option<&Fence>, epoch: u64, owner: Option<&str>) -> bool {
    match fence {
        None => true,
        Some(fence) => {
            epoch > fence.epoch || (epoch == fence.epoch && owner == fence.owner.as_deref())
        }
    }
}

/// What a reader knows of this cluster's keys: the admitted value and the fence of each.
#[derive(Default)]
pub(super) struct Ledger {
    /// The last admitted value per source; a tombstone removes it.
    pub(super) entries: BTreeMap<String, StoredPosition>,
    /// The fence per source; kept after a tombstone.
    fences: HashMap<String, Fence>,
}

impl Ledger {
    /// The fence of `source`, if anything was ever admitted for it.
    pub(super) fn fence(&self, source: &str) -> Option<&Fence> {
        self.fences.get(source)
    }

    /// The epoch of the next acquisition of `source`: one above its fence.
    pub(super) fn next_epoch(&self, source: &str) -> u64 {
        self.fence(source).map_or(0, |fence| fence.epoch) + 1
    }

    /// Applies one record of the topic: this cluster's keys only, and only writes that pass
    /// the key's fence.
    pub(super) fn apply(
        &mut self,
        config: &KafkaStoreConfig,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) {
        let Some(Ok((cluster, source))) = key.map(serde_json::from_slice::<(String, String)>)
        else {
            tracing::warn!(topic = %config.topic, "a record of the positions topic has no valid key; it is ignored");
            return;
        };
        if cluster != config.cluster {
            return;
        }
        let Some(value) = value else {
            // The fence stays: see the module doc.
            self.entries.remove(&source);
            return;
        };
        let stored: StoredPosition = match serde_json::from_slice(value) {
            Ok(stored) => stored,
            Err(error) => {
                // The previous value stays in force: an older position causes duplicates at
                // worst, never loss.
                tracing::error!(topic = %config.topic, source = %source, %error, "a stored position cannot be parsed; the previous one stays in force (`tributary positions set` replaces it)");
                return;
            }
        };
        let fence = self.fences.get(&source);
        if !admits(fence, stored.epoch, stored.owner.as_deref()) {
            let (current, current_owner) = fence.map_or((0, None), |f| (f.epoch, f.owner.clone()));
            tracing::warn!(topic = %config.topic, source = %source, epoch = stored.epoch, owner = ?stored.owner, replica = %stored.replica, current, current_owner = ?current_owner, "ignoring a write from a replica that does not own the source (a late write of a previous owner, or a claim that lost a race)");
            return;
        }
        self.fences.insert(
            source.clone(),
            Fence {
                epoch: stored.epoch,
                owner: stored.owner.clone(),
            },
        );
        self.entries.insert(source, stored);
    }
}

/// What reading a claim back says.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ClaimOutcome {
    /// The claim is the key's fence: this store owns the source.
    Owned,
    /// Another owner's claim with the same epoch was admitted first: claim again above it.
    Tied,
    /// A claim with a higher epoch is in the log before this one: another replica read the
    /// key after this one did, and it is the owner.
    Superseded,
}

/// Judges a claim of `epoch` by `owner` against the key's fence read after writing it.
pub(super) fn claim_outcome(fence: Option<&Fence>, epoch: u64, owner: &str) -> ClaimOutcome {
    match fence {
        Some(fence) if fence.epoch == epoch && fence.owner.as_deref() == Some(owner) => {
            ClaimOutcome::Owned
        }
        Some(fence) if fence.epoch > epoch => ClaimOutcome::Superseded,
        // Our claim was fenced at the same epoch, or (not seen: it is in the log before the
        // fence was read) missing: claiming again above the fence settles both.
        _ => ClaimOutcome::Tied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Position;

    fn config() -> KafkaStoreConfig {
        KafkaStoreConfig {
            connection: rdkafka::config::ClientConfig::new(),
            topic: "positions".into(),
            partitions: 1,
            replication_factor: 1,
            cluster: "east".into(),
            replica: "r1".into(),
        }
    }

    fn key(cluster: &str, source: &str) -> Vec<u8> {
        super::super::record_key(cluster, source)
    }

    fn value(position: &str, epoch: u64, owner: &str) -> Vec<u8> {
        serde_json::to_vec(&StoredPosition {
            position: Some(Position(position.into())),
            written_at: "2026-01-01T00:00:00Z".into(),
            replica: "r".into(),
            epoch,
            owner: Some(owner.into()),
        })
        .unwrap()
    }

    fn position(ledger: &Ledger, source: &str) -> Option<String> {
        ledger
            .entries
            .get(source)
            .and_then(|entry| entry.position.as_ref())
            .map(|p| p.as_str().to_owned())
    }

    fn fence(epoch: u64, owner: &str) -> Fence {
        Fence {
            epoch,
            owner: Some(owner.into()),
        }
    }

    #[test]
    fn the_fence_admits_higher_epochs_and_the_same_owner_only() {
        assert!(admits(None, 1, Some("a")));
        let current = fence(3, "a");
        assert!(admits(Some(&current), 3, Some("a")), "the owner's commit");
        assert!(admits(Some(&current), 4, Some("b")), "a new acquisition");
        assert!(
            !admits(Some(&current), 3, Some("b")),
            "same epoch, other owner"
        );
        assert!(!admits(Some(&current), 3, None), "same epoch, no owner");
        assert!(!admits(Some(&current), 2, Some("a")), "an older epoch");
        // Records of versions without owners keep their old rule among themselves.
        let legacy = Fence {
            epoch: 3,
            owner: None,
        };
        assert!(admits(Some(&legacy), 3, None));
        assert!(!admits(Some(&legacy), 3, Some("b")));
    }

    #[test]
    fn the_owner_writes_several_positions_under_one_epoch() {
        let (config, mut ledger) = (config(), Ledger::default());
        let key = key("east", "wiki");
        for (n, position) in ["claim", "1", "2"].iter().enumerate() {
            ledger.apply(&config, Some(&key), Some(&value(position, 1, "a")));
            assert_eq!(
                self::position(&ledger, "wiki").as_deref(),
                Some(*position),
                "{n}"
            );
        }
    }

    #[test]
    fn an_older_epoch_and_another_owners_equal_epoch_are_fenced() {
        let (config, mut ledger) = (config(), Ledger::default());
        let key = key("east", "wiki");
        ledger.apply(&config, Some(&key), Some(&value("1", 1, "a")));
        ledger.apply(&config, Some(&key), Some(&value("2", 2, "b")));
        ledger.apply(&config, Some(&key), Some(&value("zombie", 1, "a")));
        assert_eq!(position(&ledger, "wiki").as_deref(), Some("2"));
        // A claim that raced with b's: the same epoch, another owner.
        ledger.apply(&config, Some(&key), Some(&value("racer", 2, "c")));
        assert_eq!(position(&ledger, "wiki").as_deref(), Some("2"));
        assert_eq!(ledger.fence("wiki"), Some(&fence(2, "b")));
        assert_eq!(ledger.next_epoch("wiki"), 3);
    }

    #[test]
    fn a_tombstone_forgets_the_position_but_keeps_the_fence() {
        let (config, mut ledger) = (config(), Ledger::default());
        let key = key("east", "wiki");
        ledger.apply(&config, Some(&key), Some(&value("1", 1, "a")));
        ledger.apply(&config, Some(&key), Some(&value("5", 5, "b")));
        ledger.apply(&config, Some(&key), None);
        assert_eq!(position(&ledger, "wiki"), None);
        assert!(!ledger.entries.contains_key("wiki"));
        // A zombie below the fence stays fenced, and the next claim goes above it.
        ledger.apply(&config, Some(&key), Some(&value("zombie", 1, "a")));
        assert_eq!(position(&ledger, "wiki"), None);
        assert_eq!(ledger.next_epoch("wiki"), 6);
        // The owner of the fence may write again.
        ledger.apply(&config, Some(&key), Some(&value("6", 5, "b")));
        assert_eq!(position(&ledger, "wiki").as_deref(), Some("6"));
    }

    #[test]
    fn other_clusters_keys_and_garbage_change_nothing() {
        let (config, mut ledger) = (config(), Ledger::default());
        ledger.apply(
            &config,
            Some(&key("west", "wiki")),
            Some(&value("w", 1, "w")),
        );
        assert_eq!(position(&ledger, "wiki"), None);
        assert_eq!(ledger.next_epoch("wiki"), 1);
        let key = key("east", "wiki");
        ledger.apply(&config, Some(&key), Some(&value("1", 1, "a")));
        ledger.apply(&config, Some(&key), Some(b"{not json"));
        assert_eq!(position(&ledger, "wiki").as_deref(), Some("1"));
        ledger.apply(&config, Some(b"no json key"), Some(&value("x", 9, "x")));
        ledger.apply(&config, None, Some(&value("x", 9, "x")));
        assert_eq!(position(&ledger, "wiki").as_deref(), Some("1"));
        assert_eq!(ledger.next_epoch("wiki"), 2);
    }

    #[test]
    fn a_claim_read_back_is_owned_tied_or_superseded() {
        assert_eq!(
            claim_outcome(Some(&fence(4, "a")), 4, "a"),
            ClaimOutcome::Owned
        );
        assert_eq!(
            claim_outcome(Some(&fence(4, "b")), 4, "a"),
            ClaimOutcome::Tied
        );
        assert_eq!(claim_outcome(None, 4, "a"), ClaimOutcome::Tied);
        assert_eq!(
            claim_outcome(Some(&fence(5, "b")), 4, "a"),
            ClaimOutcome::Superseded
        );
    }
}
