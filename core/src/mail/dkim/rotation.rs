//! DKIM key rotation as a pure state machine: the keys of one domain, their phases, and the
//! next step due at a given time. No clock, no storage, no key material: the caller passes the
//! time in (tests use fake time) and generates keys when asked.
//!
//! A key's life: **published** (its TXT record is out, nothing signs with it yet) → after
//! `publish_grace_hours`, **active** (signing switches to it; the previous active key becomes
//! **retiring**, still published so mail signed with it in flight keeps verifying) → after
//! `withdraw_after_hours`, the retiring key is **withdrawn** (record and private key removed).
//! A new key is generated `rotate_days` after the active one became active. The very first key
//! of a domain is active at once (nothing to switch from).

use serde::{Deserialize, Serialize};

use crate::config::DkimPolicy;

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyPhase {
    /// Published in DNS, not yet signing.
    Published,
    /// Signing (exactly one per domain once the first key exists).
    Active,
    /// Replaced; still published until withdrawn.
    Retiring,
}

/// One key of a domain (public part; the private key is stored apart, privately).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    /// DNS selector (`<selector>._domainkey.<domain>`).
    pub selector: String,
    /// `rsa-sha256` or `ed25519-sha256`.
    pub algorithm: String,
    /// The `p=` value: base64 of the SubjectPublicKeyInfo (RSA) or the raw key (Ed25519).
    pub public_key: String,
    /// Rotation number (1 for the first key).
    pub generation: u32,
    /// Current phase.
    pub phase: KeyPhase,
    /// Unix seconds the current phase began.
    pub phase_since: u64,
}

/// Every key of one domain, as persisted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainKeyState {
    /// Keys not yet withdrawn, oldest first.
    pub keys: Vec<KeyEntry>,
    /// Generation number of the newest key ever made (0 = none yet).
    pub last_generation: u32,
}

/// The next thing to do for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationStep {
    /// Make a new key with this selector and generation; `active` for the domain's first key.
    Generate {
        /// Selector for the new key.
        selector: String,
        /// Its generation number.
        generation: u32,
        /// Whether it signs at once (no key signs yet).
        active: bool,
    },
    /// Switch signing to this published key; the active one retires.
    Activate {
        /// Selector of the published key.
        selector: String,
    },
    /// Remove this retiring key (record and private key).
    Withdraw {
        /// Its selector.
        selector: String,
    },
}

/// The selector of generation `generation` from base `base`: the base itself first, then
/// `<base>-<generation>`.
pub fn selector_for(base: &str, generation: u32) -> String {
    if generation <= 1 {
        base.to_string()
    } else {
        format!("{base}-{generation}")
    }
}

impl DomainKeyState {
    /// The key that signs now.
    pub fn active(&self) -> Option<&KeyEntry> {
        self.keys.iter().find(|k| k.phase == KeyPhase::Active)
    }

    /// The step due at `now` (unix seconds), if any. Call again after applying it: several
    /// steps can be due at once (after a long stop).
    pub fn next_step(&self, policy: &DkimPolicy, now: u64) -> Option<RotationStep> {
        let hours = |h: u32| u64::from(h) * 3600;
        if let Some(retiring) =
            self.keys.iter().find(|k| k.phase == KeyPhase::Retiring && now >= k.phase_since + hours(policy.withdraw_after_hours))
        {
            return Some(RotationStep::Withdraw { selector: retiring.selector.clone() });
        }
        let published = self.keys.iter().find(|k| k.phase == KeyPhase::Published);
        let Some(active) = self.active() else {
            return Some(match published {
                // Left published without an active key (a crash between steps): use it now.
                Some(key) => RotationStep::Activate { selector: key.selector.clone() },
                None => self.generate(policy, true),
            });
        };
        if let Some(key) = published {
            if now >= key.phase_since + hours(policy.publish_grace_hours) {
                return Some(RotationStep::Activate { selector: key.selector.clone() });
            }
            return None;
        }
        let rotate_after = u64::from(policy.rotate_days) * 86_400;
        (policy.rotate_days > 0 && now >= active.phase_since + rotate_after).then(|| self.generate(policy, false))
    }

    fn generate(&self, policy: &DkimPolicy, active: bool) -> RotationStep {
        let mut generation = self.last_generation + 1;
        // Never reuse a selector still in the state (a changed base selector could collide).
        while self.keys.iter().any(|k| k.selector == selector_for(&policy.selector, generation)) {
            generation += 1;
        }
        RotationStep::Generate { selector: selector_for(&policy.selector, generation), generation, active }
    }

    /// Adds a generated key (from a `Generate` step).
    pub fn add(&mut self, entry: KeyEntry) {
        self.last_generation = self.last_generation.max(entry.generation);
        self.keys.push(entry);
    }

    /// Applies an `Activate` step at `now`.
    pub fn activate(&mut self, selector: &str, now: u64) {
        if !self.keys.iter().any(|k| k.selector == selector) {
            return;
        }
        for key in &mut self.keys {
            if key.selector == selector {
                key.phase = KeyPhase::Active;
                key.phase_since = now;
            } else if key.phase == KeyPhase::Active {
                key.phase = KeyPhase::Retiring;
                key.phase_since = now;
            }
        }
    }

    /// Applies a `Withdraw` step.
    pub fn withdraw(&mut self, selector: &str) {
        self.keys.retain(|k| k.selector != selector);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3600;
    const DAY: u64 = 86_400;

    fn policy() -> DkimPolicy {
        DkimPolicy { rotate_days: 30, publish_grace_hours: 48, withdraw_after_hours: 7 * 24, ..DkimPolicy::defaults() }
    }

    /// Runs every due step at `now`, as the key manager does, with a fake key.
    fn run(state: &mut DomainKeyState, policy: &DkimPolicy, now: u64) -> Vec<RotationStep> {
        let mut steps = Vec::new();
        while let Some(step) = state.next_step(policy, now) {
            match &step {
                RotationStep::Generate { selector, generation, active } => state.add(KeyEntry {
                    selector: selector.clone(),
                    algorithm: "rsa-sha256".into(),
                    public_key: format!("key{generation}"),
                    generation: *generation,
                    phase: if *active { KeyPhase::Active } else { KeyPhase::Published },
                    phase_since: now,
                }),
                RotationStep::Activate { selector } => state.activate(selector, now),
                RotationStep::Withdraw { selector } => state.withdraw(selector),
            }
            steps.push(step);
            assert!(steps.len() < 10, "rotation does not settle: {steps:?}");
        }
        steps
    }

    fn phases(state: &DomainKeyState) -> Vec<(String, KeyPhase)> {
        state.keys.iter().map(|k| (k.selector.clone(), k.phase)).collect()
    }

    #[test]
    fn first_key_is_active_at_once_and_nothing_else_is_due() {
        let mut state = DomainKeyState::default();
        let t0 = 1_000_000;
        let steps = run(&mut state, &policy(), t0);
        assert_eq!(steps, vec![RotationStep::Generate { selector: "shardgate".into(), generation: 1, active: true }]);
        assert!(run(&mut state, &policy(), t0 + 29 * DAY).is_empty());
    }

    #[test]
    fn publish_then_switch_then_withdraw() {
        let policy = policy();
        let mut state = DomainKeyState::default();
        let t0 = 1_000_000;
        run(&mut state, &policy, t0);
        // Rotation due: the new key is published, signing stays on the old one.
        let t1 = t0 + 30 * DAY;
        assert_eq!(run(&mut state, &policy, t1).len(), 1);
        assert_eq!(phases(&state), vec![("shardgate".into(), KeyPhase::Active), ("shardgate-2".into(), KeyPhase::Published)]);
        assert_eq!(state.active().map(|k| k.selector.as_str()), Some("shardgate"));
        // Still inside the grace period.
        assert!(run(&mut state, &policy, t1 + 47 * HOUR).is_empty());
        // Grace over: switch; the old key keeps its record.
        let t2 = t1 + 48 * HOUR;
        assert_eq!(run(&mut state, &policy, t2), vec![RotationStep::Activate { selector: "shardgate-2".into() }]);
        assert_eq!(phases(&state), vec![("shardgate".into(), KeyPhase::Retiring), ("shardgate-2".into(), KeyPhase::Active)]);
        // Withdrawn a week later.
        assert!(run(&mut state, &policy, t2 + 7 * DAY - 1).is_empty());
        assert_eq!(run(&mut state, &policy, t2 + 7 * DAY), vec![RotationStep::Withdraw { selector: "shardgate".into() }]);
        assert_eq!(phases(&state), vec![("shardgate-2".into(), KeyPhase::Active)]);
        // The next rotation counts from the switch.
        assert!(run(&mut state, &policy, t2 + 30 * DAY - 1).is_empty());
        assert_eq!(
            run(&mut state, &policy, t2 + 30 * DAY),
            vec![RotationStep::Generate { selector: "shardgate-3".into(), generation: 3, active: false }]
        );
    }

    #[test]
    fn a_long_stop_catches_up_in_order_without_skipping_the_grace() {
        let policy = policy();
        let mut state = DomainKeyState::default();
        run(&mut state, &policy, 0);
        // Down for a year: the new key is published now, and the switch still waits its grace.
        let late = 365 * DAY;
        let steps = run(&mut state, &policy, late);
        assert_eq!(steps, vec![RotationStep::Generate { selector: "shardgate-2".into(), generation: 2, active: false }]);
        assert_eq!(state.active().map(|k| k.selector.as_str()), Some("shardgate"));
    }

    #[test]
    fn rotate_days_zero_never_rotates() {
        let policy = DkimPolicy { rotate_days: 0, ..policy() };
        let mut state = DomainKeyState::default();
        run(&mut state, &policy, 0);
        assert!(run(&mut state, &policy, 10 * 365 * DAY).is_empty());
    }

    #[test]
    fn a_published_key_without_an_active_one_is_activated() {
        let mut state = DomainKeyState::default();
        state.add(KeyEntry {
            selector: "s-2".into(),
            algorithm: "ed25519-sha256".into(),
            public_key: "k".into(),
            generation: 2,
            phase: KeyPhase::Published,
            phase_since: 5,
        });
        assert_eq!(state.next_step(&policy(), 6), Some(RotationStep::Activate { selector: "s-2".into() }));
    }
}
