//! Reading and writing cgroup control files, with errors that name the file and the value.

use std::fs;
use std::io;
use std::path::Path;

use super::CgroupError;

pub fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    fs::write(&path, value).map_err(|source| CgroupError::Write {
        path,
        value: value.to_string(),
        source,
    })
}

pub fn read(dir: &Path, file: &str) -> Result<String, CgroupError> {
    let path = dir.join(file);
    fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })
}

pub fn read_u64(dir: &Path, file: &str) -> Result<u64, CgroupError> {
    let text = read(dir, file)?;
    text.trim().parse().map_err(|_| CgroupError::Parse {
        path: dir.join(file),
        text,
    })
}

/// A value of a flat-keyed file (`memory.stat`, `cpu.stat`, `memory.events`,
/// `memory.oom_control`): `key value` per line.
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Removes a cgroup directory, retrying while the kernel still counts exiting tasks in it.
pub fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    let mut delay = std::time::Duration::from_millis(1);
    for _ in 0..12 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
    Err(CgroupError::Remove {
        path: dir.to_path_buf(),
        source: io::Error::from_raw_os_error(libc::EBUSY),
    })
}

/// Pids listed in a `cgroup.procs` file.
pub fn procs(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    Ok(read(dir, "cgroup.procs")?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_values() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed(text, "oom_kill"), Some(3));
        assert_eq!(keyed(text, "missing"), None);
        assert_eq!(keyed("usage_usec 12\n", "usage_usec"), Some(12));
    }
}
