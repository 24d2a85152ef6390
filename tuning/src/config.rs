//! [`TuningConfig`]: the `[tuning]` section of shardgate's configuration.
//!
//! Owns: the section's fields, their defaults and [`TuningConfig::validate`]. Does not own:
//! reading the config file (the `shardgate` binary does) or the shard CPU list (it comes from
//! the shard layout).
//!
//! ```toml
//! [tuning]
//! apply = true                 # tune the host at start-up (needs root)
//! interfaces = ["eth0"]        # empty or absent: every device-backed interface
//! sysctl = true                # consent to writing the edge sysctl profile too
//! steer_connections = true     # reuseport CBPF: accept on the shard of the receiving CPU
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::error::TuningError;
use crate::plan::{plan, Consent, Plan};
use crate::state::AppliedState;
use crate::sysctl::SysctlProfile;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const MAX_INTERFACE_NAME_LEN: usize = 15;

/// The `[tuning]` config section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuningConfig {
    /// Apply the plan at start-up.
    #[serde(default)]
    pub apply: bool,
    /// Interfaces to tune; empty means every device-backed interface.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Consent to writing sysctls (the edge profile) as well as NIC settings.
    #[serde(default)]
    pub sysctl: bool,
    /// Attach the reuseport CPU-steering program ([`crate::attach_reuseport_cpu_steering`])
    /// to every listener group, so a connection is accepted by the shard on the CPU that
    /// received its packets. Pair it with `apply = true` (IRQ affinity); without interrupt
    /// pinning the kernel's hash spreads load better.
    #[serde(default)]
    pub steer_connections: bool,
}

impl TuningConfig {
    /// Check interface names and that the flags make sense together.
    pub fn validate(&self) -> Result<(), TuningError> {
        for (index, name) in self.interfaces.iter().enumerate() {
            validate_interface_name(name)?;
            if self.interfaces[..index].contains(name) {
                return Err(TuningError::DuplicateInterface(name.clone()));
            }
        }
        if self.sysctl && !self.apply {
            return Err(TuningError::InvalidConfig(
                "sysctl = true has no effect without apply = true; set both or remove sysctl"
                    .to_string(),
            ));
        }
        Ok(())
    }

    /// The consent the section gives to [`crate::Plan::apply`].
    pub fn consent(&self) -> Consent {
        Consent::from_sysctl_flag(self.sysctl)
    }

    /// Start-up tuning: when `apply = true`, plan for `shard_cpus` with the edge sysctl profile
    /// and apply under `root` with this section's consent, recording old values in `state_dir`.
    /// Returns `None` when the section does not ask for tuning.
    pub fn apply_at_startup(
        &self,
        root: &Path,
        shard_cpus: &[usize],
        state_dir: &Path,
    ) -> Result<Option<(Plan, AppliedState)>, TuningError> {
        self.validate()?;
        if !self.apply {
            return Ok(None);
        }
        let plan = plan(root, &self.interfaces, shard_cpus, &SysctlProfile::edge())?;
        let applied = plan.apply(root, state_dir, self.consent())?;
        Ok(Some((plan, applied)))
    }
}

/// Check that `name` is a name the kernel could give an interface.
pub fn validate_interface_name(name: &str) -> Result<(), TuningError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_INTERFACE_NAME_LEN
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if valid {
        Ok(())
    } else {
        Err(TuningError::InvalidInterfaceName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_parses_with_defaults_and_rejects_unknown_keys() {
        let config: TuningConfig =
            toml::from_str("apply = true\ninterfaces = [\"eth0\", \"eth1\"]\n").unwrap();
        assert_eq!(
            config,
            TuningConfig {
                apply: true,
                interfaces: vec!["eth0".into(), "eth1".into()],
                sysctl: false,
                steer_connections: false,
            }
        );
        config.validate().unwrap();
        assert_eq!(config.consent(), Consent::NicOnly);
        assert_eq!(
            toml::from_str::<TuningConfig>("").unwrap(),
            TuningConfig::default()
        );
        let err = toml::from_str::<TuningConfig>("apply = true\nsysctls = true\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn validation_names_the_problem() {
        let bad_name = TuningConfig {
            interfaces: vec!["../eth0".into()],
            ..TuningConfig::default()
        };
        assert!(matches!(
            bad_name.validate(),
            Err(TuningError::InvalidInterfaceName(_))
        ));
        let too_long = TuningConfig {
            interfaces: vec!["a234567890123456".into()],
            ..TuningConfig::default()
        };
        assert!(matches!(
            too_long.validate(),
            Err(TuningError::InvalidInterfaceName(_))
        ));
        let twice = TuningConfig {
            interfaces: vec!["eth0".into(), "eth0".into()],
            ..TuningConfig::default()
        };
        assert!(matches!(
            twice.validate(),
            Err(TuningError::DuplicateInterface(_))
        ));
        let consent_without_apply = TuningConfig {
            sysctl: true,
            ..TuningConfig::default()
        };
        let err = consent_without_apply.validate().unwrap_err();
        assert!(
            err.to_string().contains("sysctl = true has no effect"),
            "{err}"
        );
        let full = TuningConfig {
            apply: true,
            interfaces: vec!["ens1f0".into()],
            sysctl: true,
            steer_connections: true,
        };
        full.validate().unwrap();
        assert_eq!(full.consent(), Consent::NicAndSysctls);
    }
}
