//! Disk encryption: is the root filesystem stored on a dm-crypt device?
//!
//! "Disk encrypted" is taken to mean what protects a lost laptop: the
//! filesystem holding `/` is readable only through a dm-crypt mapping. The
//! collector follows the live device stack rather than configuration:
//! - `proc/self/mountinfo`: the device number, type and source of `/`.
//! - `sys/class/block/<dev>/dev`: finds that device's name by number (or by
//!   name from the mount source, for btrfs, whose mounts carry an anonymous
//!   `0:N` number); `dm/name` maps `/dev/mapper/<name>` to it.
//! - `sys/class/block/<dev>/slaves/`: the devices beneath it (LVM over
//!   LUKS is two layers); `dm/uuid` of each layer says what it is. The
//!   device-mapper UUID that cryptsetup gives a mapping starts with
//!   `CRYPT-<type>-`; only the types that encrypt count: dm-verity and
//!   dm-integrity (`CRYPT-VERITY`, `CRYPT-INTEGRITY`) are made by the same
//!   tools but only check data.
//!
//! `etc/crypttab` is not read: it lists what should be unlocked at boot,
//! not what `/` is on now. A root that is not on a visible block device
//! (a container's overlay, ZFS, NFS) is unknown, not unencrypted.

use std::collections::BTreeSet;
use std::path::Path;

use super::Finding;
use super::read::{self, Absent, Read};

const BLOCK: &str = "sys/class/block";
/// Layers followed below the root device; real stacks have two or three.
const MAX_LAYERS: usize = 16;

/// The mount of `/`, from one mountinfo line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootMount {
    /// `major:minor`.
    pub dev: String,
    pub fstype: String,
    pub source: String,
}

/// The last mount of `/` in a mountinfo(5) table (a later mount hides an
/// earlier one).
pub fn parse_root_mount(mountinfo: &str) -> Option<RootMount> {
    mountinfo.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields.iter().position(|&f| f == "-")?;
        match (
            fields.get(2),
            fields.get(4),
            fields.get(dash + 1),
            fields.get(dash + 2),
        ) {
            (Some(dev), Some(&"/"), Some(fstype), Some(source)) if dash >= 6 => Some(RootMount {
                dev: (*dev).to_owned(),
                fstype: (*fstype).to_owned(),
                source: (*source).to_owned(),
            }),
            _ => None,
        }
    })
}

/// The cryptsetup type in a device-mapper UUID, if it names an encrypting
/// one: `CRYPT-LUKS2-<uuid>-<name>` → `LUKS2`.
pub fn encrypting_crypt_type(dm_uuid: &str) -> Option<&str> {
    const ENCRYPTING: [&str; 7] = [
        "LUKS1", "LUKS2", "PLAIN", "LOOPAES", "TCRYPT", "BITLK", "FVAULT2",
    ];
    let kind = dm_uuid.strip_prefix("CRYPT-")?.split('-').next()?;
    ENCRYPTING.contains(&kind).then_some(kind)
}

/// One device in the stack under `/`.
struct Layer {
    name: String,
    dm_uuid: Option<String>,
}

pub fn root_encrypted(root: &Path) -> Finding<bool> {
    const MOUNTINFO: &str = "proc/self/mountinfo";
    let mount = match read::text(root, MOUNTINFO) {
        Read::Text(t) => match parse_root_mount(&t) {
            Some(m) => m,
            None => return Finding::unknown(format!("{MOUNTINFO} has no mount of /")),
        },
        Read::Missing => {
            return Finding::unknown(format!("{MOUNTINFO} does not exist (is /proc mounted?)"));
        }
        Read::Failed(e) => return Finding::unknown(e),
    };
    let not_a_block_device = || {
        Finding::unknown(format!(
            "/ is {} on {}, not a block device in {BLOCK} (a container, or a network or ZFS root?)",
            mount.fstype, mount.source
        ))
    };
    // An anonymous device number with a source outside /dev (overlay,
    // tmpfs, a ZFS dataset, a network share) has no block device to follow.
    if mount.dev.starts_with("0:") && !mount.source.starts_with("/dev/") {
        return not_a_block_device();
    }
    let names = match read::dir_names(root, BLOCK, 4096) {
        Ok(names) => names,
        Err(Absent::Missing) => {
            return Finding::unknown(format!("{BLOCK} does not exist (is /sys mounted?)"));
        }
        Err(Absent::Failed(e)) => return Finding::unknown(e),
    };
    let Some(top) = find_device(root, &names, &mount) else {
        return not_a_block_device();
    };
    let (layers, hidden) = stack(root, &top);
    let chain = layers
        .iter()
        .map(|l| l.name.as_str())
        .collect::<Vec<_>>()
        .join(" over ");
    let crypt = layers.iter().find_map(|l| {
        let kind = encrypting_crypt_type(l.dm_uuid.as_deref()?)?;
        Some((l.name.as_str(), kind))
    });
    if let Some((name, kind)) = crypt {
        return Finding::known(
            true,
            format!(
                "/ ({}) is on {chain}; {name} is dm-crypt {kind}",
                mount.fstype
            ),
        );
    }
    if !hidden.is_empty() {
        return Finding::unknown(format!(
            "/ is on {chain}, and {} below it is not in {BLOCK}",
            hidden.join(", ")
        ));
    }
    let mut why = format!("/ ({}) is on {chain}; no layer is dm-crypt", mount.fstype);
    if layers.iter().any(|l| {
        l.dm_uuid
            .as_deref()
            .is_some_and(|u| u.starts_with("CRYPT-"))
    }) {
        why.push_str(" (dm-verity and dm-integrity check data, they do not encrypt it)");
    }
    Finding::known(false, why)
}

/// The name in `sys/class/block` of the device `/` is mounted from.
fn find_device(root: &Path, names: &[String], mount: &RootMount) -> Option<String> {
    let attr = |name: &str, file: &str| read::attribute(root, &format!("{BLOCK}/{name}/{file}"));
    // Major 0 is the kernel's anonymous devices: no block device has it.
    if !mount.dev.starts_with("0:")
        && let Some(n) = names
            .iter()
            .find(|n| attr(n, "dev").as_deref() == Some(&mount.dev))
    {
        return Some(n.clone());
    }
    if let Some(mapped) = mount.source.strip_prefix("/dev/mapper/") {
        return names
            .iter()
            .find(|n| attr(n, "dm/name").as_deref() == Some(mapped))
            .cloned();
    }
    let name = mount.source.strip_prefix("/dev/")?;
    names.iter().find(|n| n.as_str() == name).cloned()
}

/// `top` and every device beneath it, breadth first; and the names listed
/// as beneath a layer that `sys/class/block` does not have.
fn stack(root: &Path, top: &str) -> (Vec<Layer>, Vec<String>) {
    let mut queue = vec![top.to_owned()];
    let mut seen = BTreeSet::new();
    let (mut layers, mut hidden) = (Vec::new(), Vec::new());
    while let Some(name) = queue.pop() {
        if !seen.insert(name.clone()) || layers.len() >= MAX_LAYERS {
            continue;
        }
        if read::exists(root, &format!("{BLOCK}/{name}")) != Some(true) {
            hidden.push(name);
            continue;
        }
        let dm_uuid = read::attribute(root, &format!("{BLOCK}/{name}/dm/uuid"));
        // Missing `slaves/` is a leaf (a partition, a whole disk).
        let below = read::dir_names(root, &format!("{BLOCK}/{name}/slaves"), MAX_LAYERS)
            .unwrap_or_default();
        queue.splice(0..0, below);
        layers.push(Layer { name, dm_uuid });
    }
    (layers, hidden)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::root;
    use super::*;

    #[test]
    fn the_last_mount_of_root_wins() {
        let info = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
                    2 1 0:5 / /proc rw - proc proc rw\n\
                    3 1 254:1 / / rw shared:1 - ext4 /dev/mapper/vg-root rw\n";
        let m = parse_root_mount(info).expect("root mount");
        assert_eq!(
            (m.dev.as_str(), m.source.as_str()),
            ("254:1", "/dev/mapper/vg-root")
        );
        assert_eq!(
            parse_root_mount("2 1 0:5 / /proc rw - proc proc rw\n"),
            None
        );
        assert_eq!(parse_root_mount("3 1 254:1 / / rw -\n"), None, "truncated");
    }

    #[test]
    fn only_encrypting_cryptsetup_types_count() {
        assert_eq!(
            encrypting_crypt_type("CRYPT-LUKS2-3f1c-root"),
            Some("LUKS2")
        );
        assert_eq!(encrypting_crypt_type("CRYPT-PLAIN-swap"), Some("PLAIN"));
        for not in [
            "CRYPT-VERITY-6d1f-root",
            "CRYPT-INTEGRITY-x",
            "LVM-Jx8y",
            "",
            "CRYPT-",
        ] {
            assert_eq!(encrypting_crypt_type(not), None, "{not}");
        }
    }

    #[test]
    fn lvm_over_luks_is_encrypted() {
        let f = root_encrypted(&root("hardened"));
        assert_eq!(f.value, Some(true), "{}", f.why);
        assert_eq!(
            f.why,
            "/ (ext4) is on dm-1 over dm-0 over nvme0n1p3; dm-0 is dm-crypt LUKS2"
        );
    }

    #[test]
    fn a_plain_partition_is_not_encrypted_even_under_btrfs() {
        let f = root_encrypted(&root("bare"));
        assert_eq!(f.value, Some(false), "{}", f.why);
        assert_eq!(f.why, "/ (btrfs) is on nvme0n1p2; no layer is dm-crypt");
    }

    #[test]
    fn dm_verity_is_not_encryption() {
        let f = root_encrypted(&root("appliance"));
        assert_eq!(f.value, Some(false), "{}", f.why);
        assert!(f.why.contains("dm-verity"), "{}", f.why);
    }

    #[test]
    fn overlay_and_missing_proc_are_unknown() {
        let f = root_encrypted(&root("container"));
        assert_eq!(f.value, None);
        assert!(f.why.contains("overlay"), "{}", f.why);
        let f = root_encrypted(&root("empty"));
        assert_eq!(f.value, None);
        assert!(f.why.contains("is /proc mounted?"), "{}", f.why);
    }
}
