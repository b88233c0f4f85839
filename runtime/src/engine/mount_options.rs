//! Translation of OCI mount options (`["nosuid", "mode=755", "ro"]`) into what mount(2) takes:
//! flags, propagation changes, and the filesystem-specific data string.

use libc::c_ulong;

/// A mount as mount(2) wants it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedOptions {
    /// MS_* flags for the mount itself.
    pub flags: c_ulong,
    /// Propagation flags (MS_PRIVATE, MS_SLAVE, …, possibly with MS_REC) applied afterwards.
    pub propagation: Vec<c_ulong>,
    /// Options the filesystem interprets (`mode=755,size=64m`).
    pub data: String,
}

impl ParsedOptions {
    pub fn is_bind(&self) -> bool {
        self.flags & libc::MS_BIND != 0
    }

    /// Flags that a bind mount only honours on a second, remounting call.
    pub fn needs_bind_remount(&self) -> bool {
        const REMOUNT_ONLY: c_ulong = libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC
            | libc::MS_NOATIME
            | libc::MS_NODIRATIME
            | libc::MS_RELATIME
            | libc::MS_STRICTATIME;
        self.is_bind() && self.flags & REMOUNT_ONLY != 0
    }
}

/// Parses OCI/fstab-style options. Unknown words are handed to the filesystem as data, as
/// mount(8) does: the kernel is the judge of what a filesystem accepts.
pub fn parse(options: &[String]) -> ParsedOptions {
    let mut parsed = ParsedOptions::default();
    let mut data: Vec<&str> = Vec::new();
    for option in options {
        let option = option.as_str();
        if let Some(flag) = propagation_flag(option) {
            parsed.propagation.push(flag);
            continue;
        }
        match flag_effect(option) {
            Some((true, flag)) => parsed.flags &= !flag,
            Some((false, flag)) => parsed.flags |= flag,
            None => data.push(option),
        }
    }
    parsed.data = data.join(",");
    parsed
}

/// (clears, flag) for flag words.
fn flag_effect(option: &str) -> Option<(bool, c_ulong)> {
    Some(match option {
        "defaults" => (true, 0),
        "ro" => (false, libc::MS_RDONLY),
        "rw" => (true, libc::MS_RDONLY),
        "nosuid" => (false, libc::MS_NOSUID),
        "suid" => (true, libc::MS_NOSUID),
        "nodev" => (false, libc::MS_NODEV),
        "dev" => (true, libc::MS_NODEV),
        "noexec" => (false, libc::MS_NOEXEC),
        "exec" => (true, libc::MS_NOEXEC),
        "sync" => (false, libc::MS_SYNCHRONOUS),
        "async" => (true, libc::MS_SYNCHRONOUS),
        "dirsync" => (false, libc::MS_DIRSYNC),
        "remount" => (false, libc::MS_REMOUNT),
        "mand" => (false, libc::MS_MANDLOCK),
        "nomand" => (true, libc::MS_MANDLOCK),
        "noatime" => (false, libc::MS_NOATIME),
        "atime" => (true, libc::MS_NOATIME),
        "nodiratime" => (false, libc::MS_NODIRATIME),
        "diratime" => (true, libc::MS_NODIRATIME),
        "relatime" => (false, libc::MS_RELATIME),
        "norelatime" => (true, libc::MS_RELATIME),
        "strictatime" => (false, libc::MS_STRICTATIME),
        "nostrictatime" => (true, libc::MS_STRICTATIME),
        "lazytime" => (false, libc::MS_LAZYTIME),
        "nolazytime" => (true, libc::MS_LAZYTIME),
        "silent" => (false, libc::MS_SILENT),
        "loud" => (true, libc::MS_SILENT),
        "bind" => (false, libc::MS_BIND),
        "rbind" => (false, libc::MS_BIND | libc::MS_REC),
        _ => return None,
    })
}

fn propagation_flag(option: &str) -> Option<c_ulong> {
    Some(match option {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    })
}

/// Parses `linux.rootfsPropagation` ("rprivate", "rslave", …).
pub fn parse_propagation(value: &str) -> Option<c_ulong> {
    propagation_flag(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn splits_flags_propagation_and_data() {
        let p = parse(&opts(&[
            "nosuid",
            "strictatime",
            "mode=755",
            "size=65536k",
            "rprivate",
        ]));
        assert_eq!(p.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(p.data, "mode=755,size=65536k");
        assert_eq!(p.propagation, vec![libc::MS_PRIVATE | libc::MS_REC]);
        assert!(!p.is_bind());
    }

    #[test]
    fn later_words_override_earlier_ones() {
        assert_eq!(parse(&opts(&["ro", "rw"])).flags, 0);
        assert_eq!(parse(&opts(&["rw", "ro"])).flags, libc::MS_RDONLY);
    }

    #[test]
    fn read_only_bind_needs_a_remount() {
        let p = parse(&opts(&["rbind", "ro"]));
        assert!(p.is_bind());
        assert_eq!(p.flags & libc::MS_REC, libc::MS_REC);
        assert!(p.needs_bind_remount());
        assert!(!parse(&opts(&["bind"])).needs_bind_remount());
    }
}
