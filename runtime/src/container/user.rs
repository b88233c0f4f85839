//! Resolving `-u`/the image's `User` (`name`, `uid`, `name:group`, `uid:gid`) against the
//! image's /etc/passwd and /etc/group, the way docker does: numeric ids need no entry, names
//! must exist, and the user's supplementary groups and home come from those files.

use super::ContainerError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// Home directory from /etc/passwd, `/` if the user has no entry.
    pub home: String,
}

#[derive(Debug)]
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

#[derive(Debug)]
struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || line.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || line.starts_with('#') {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f[3].split(',').filter(|m| !m.is_empty()).collect(),
        })
    })
}

/// Resolves `spec` (empty means root) with the image's passwd and group files (empty text
/// when the image has none).
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<ResolvedUser, ContainerError> {
    let spec = if spec.is_empty() { "0" } else { spec };
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => passwd_entries(passwd).find(|e| e.uid == uid),
        Err(_) => Some(
            passwd_entries(passwd)
                .find(|e| e.name == user_part)
                .ok_or_else(|| {
                    ContainerError::InvalidInput(format!(
                        "unable to find user {user_part}: no matching entries in passwd file"
                    ))
                })?,
        ),
    };
    let uid = match &entry {
        Some(e) => e.uid,
        None => user_part
            .parse()
            .map_err(|_| ContainerError::InvalidInput(format!("invalid user {spec:?}")))?,
    };
    let gid = match group_part {
        Some("") => {
            return Err(ContainerError::InvalidInput(format!(
                "invalid user {spec:?}"
            )));
        }
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(group)
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| {
                    ContainerError::InvalidInput(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?,
        },
        None => entry.as_ref().map_or(0, |e| e.gid),
    };
    // Supplementary groups only when the group was not forced, as docker/runc do.
    let additional_gids = match (&entry, group_part) {
        (Some(e), None) => {
            let mut gids: Vec<u32> = group_entries(group)
                .filter(|g| g.members.contains(&e.name) && g.gid != gid)
                .map(|g| g.gid)
                .collect();
            gids.dedup();
            gids
        }
        _ => Vec::new(),
    };
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home: entry.map_or_else(|| "/".to_string(), |e| e.home.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
        app:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str =
        "root:x:0:\nnogroup:x:65534:\napp:x:1000:\nwheel:x:10:app\naudio:x:29:app,nobody\n";

    #[test]
    fn default_is_root() {
        let u = resolve("", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
    }

    #[test]
    fn names_and_numbers() {
        let u = resolve("nobody", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid), (65534, 65534));
        assert_eq!(u.additional_gids, [29]);
        let u = resolve("app", PASSWD, GROUP).unwrap();
        assert_eq!(u.additional_gids, [10, 29]);
        assert_eq!(u.home, "/home/app");
        let u = resolve("1000:1000", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert!(u.additional_gids.is_empty());
        let u = resolve("4242", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        let u = resolve("app:wheel", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 10));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(resolve("ghost", PASSWD, GROUP).is_err());
        assert!(resolve("app:ghosts", PASSWD, GROUP).is_err());
        assert!(resolve("app:", PASSWD, GROUP).is_err());
        assert!(resolve("0", "", "").is_ok());
    }
}
