//! Freezing a cgroup, shared by both backends: ask, then wait until the kernel reports every
//! task frozen. Freezing is not instantaneous (a task in an uninterruptible sleep is frozen
//! when it wakes), and "asked" is not "done": commit must not read a layer that is still being
//! written to.

use std::path::Path;
use std::time::{Duration, Instant};

use super::CgroupError;
use super::files;

/// How long a freeze may take before carton gives up (and thaws again).
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// One backend's freezer files.
pub struct Freezer<'a> {
    pub dir: &'a Path,
    /// The control file and the values that freeze / thaw.
    pub control: &'static str,
    pub frozen: &'static str,
    pub thawed: &'static str,
    /// Whether the state file (control itself on v1, cgroup.events on v2) says "frozen".
    pub is_frozen: fn(&Path) -> Result<bool, CgroupError>,
}

impl Freezer<'_> {
    /// Freezes, waiting up to `timeout`; on timeout (or error while waiting) thaws again.
    pub fn freeze(&self, timeout: Duration) -> Result<(), CgroupError> {
        files::write(self.dir, self.control, self.frozen)?;
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_micros(200);
        let mut attempts = 0u32;
        loop {
            match (self.is_frozen)(self.dir) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    let _ = self.thaw();
                    return Err(e);
                }
            }
            if Instant::now() > deadline {
                let _ = self.thaw();
                return Err(CgroupError::Freeze {
                    path: self.dir.to_path_buf(),
                    reason: format!("its processes were not all frozen within {timeout:?}"),
                });
            }
            attempts += 1;
            // v1 can stay in FREEZING when a task forks meanwhile: asking again helps.
            if attempts % 50 == 0 {
                files::write(self.dir, self.control, self.frozen)?;
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(10));
        }
    }

    pub fn thaw(&self) -> Result<(), CgroupError> {
        files::write(self.dir, self.control, self.thawed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events_frozen(dir: &Path) -> Result<bool, CgroupError> {
        Ok(files::keyed(&files::read(dir, "cgroup.events")?, "frozen") == Some(1))
    }

    fn freezer(dir: &Path) -> Freezer<'_> {
        Freezer {
            dir,
            control: "cgroup.freeze",
            frozen: "1",
            thawed: "0",
            is_frozen: events_frozen,
        }
    }

    #[test]
    fn a_freeze_that_never_completes_is_undone() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        let err = freezer(tmp.path())
            .freeze(Duration::from_millis(50))
            .unwrap_err();
        assert!(matches!(err, CgroupError::Freeze { .. }), "{err}");
        let control = std::fs::read_to_string(tmp.path().join("cgroup.freeze")).unwrap();
        assert_eq!(control, "0", "thawed again after the timeout");
    }
}
