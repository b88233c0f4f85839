//! The last step of the init: find the user's command with the container's PATH and exec it.
//! Failures map to docker's exit codes: 127 when the command does not exist, 126 when it
//! exists but cannot be executed.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::error::InitFailure;

pub const EXIT_CANNOT_EXECUTE: i32 = 126;
pub const EXIT_NOT_FOUND: i32 = 127;

/// Why the command could not be resolved.
#[derive(Debug, PartialEq, Eq)]
pub enum LookupError {
    NotFound,
    NotExecutable(PathBuf),
}

/// PATH lookup as a shell does it: a name with a `/` is used as is; otherwise the first
/// executable regular file among the PATH directories wins.
pub fn find_executable(name: &str, path_var: Option<&str>) -> Result<PathBuf, LookupError> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    if name.is_empty() {
        return Err(LookupError::NotFound);
    }
    let mut not_executable = None;
    for dir in path_var.unwrap_or(DEFAULT_PATH).split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(name);
        let Ok(meta) = candidate.metadata() else {
            continue;
        };
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            return Ok(candidate);
        }
        if meta.is_file() && not_executable.is_none() {
            not_executable = Some(candidate);
        }
    }
    Err(not_executable.map_or(LookupError::NotFound, LookupError::NotExecutable))
}

/// The PATH used when the spec's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Execs `args` with `env`. Returns only on failure.
pub fn exec(args: &[String], env: &[String]) -> InitFailure {
    let Some(name) = args.first() else {
        return failure(125, "no command given");
    };
    let path_var = env.iter().find_map(|e| e.strip_prefix("PATH="));
    let program = match find_executable(name, path_var) {
        Ok(p) => p,
        Err(LookupError::NotFound) => {
            return failure(
                EXIT_NOT_FOUND,
                format!("exec: {name:?}: executable file not found in $PATH"),
            );
        }
        Err(LookupError::NotExecutable(p)) => {
            return failure(
                EXIT_CANNOT_EXECUTE,
                format!("exec: {:?}: permission denied", p.display().to_string()),
            );
        }
    };
    let to_c = |s: &[u8]| CString::new(s).ok();
    let Some(c_program) = to_c(program.as_os_str().as_bytes()) else {
        return failure(125, "command contains a NUL byte");
    };
    let c_args: Option<Vec<CString>> = args.iter().map(|a| to_c(a.as_bytes())).collect();
    let c_env: Option<Vec<CString>> = env.iter().map(|e| to_c(e.as_bytes())).collect();
    let (Some(c_args), Some(c_env)) = (c_args, c_env) else {
        return failure(125, "argument or environment contains a NUL byte");
    };
    let mut argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = c_env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: NULL-terminated arrays of NUL-terminated strings that outlive the call.
    unsafe { libc::execve(c_program.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let err = io::Error::last_os_error();
    let code = match err.raw_os_error() {
        Some(libc::ENOENT) => EXIT_NOT_FOUND,
        _ => EXIT_CANNOT_EXECUTE,
    };
    let shown = program.display().to_string();
    let reason = match err.raw_os_error() {
        Some(libc::ENOENT) => "no such file or directory".to_string(),
        Some(libc::EACCES) => "permission denied".to_string(),
        _ => err.to_string(),
    };
    failure(code, format!("exec: {shown:?}: {reason}"))
}

fn failure(exit_code: i32, message: impl Into<String>) -> InitFailure {
    InitFailure {
        step: "exec".into(),
        message: message.into(),
        // The message already names the cause in docker's words; no errno suffix.
        errno: None,
        exit_code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn finds_the_first_executable_in_path() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        fs::write(a.join("tool"), "").unwrap(); // not executable
        fs::write(b.join("tool"), "").unwrap();
        fs::set_permissions(b.join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:{}", a.display(), b.display());
        assert_eq!(find_executable("tool", Some(&path)), Ok(b.join("tool")));
    }

    #[test]
    fn reports_missing_and_non_executable_commands() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("data"), "").unwrap();
        let path = dir.path().display().to_string();
        assert_eq!(
            find_executable("nope", Some(&path)),
            Err(LookupError::NotFound)
        );
        assert_eq!(
            find_executable("data", Some(&path)),
            Err(LookupError::NotExecutable(dir.path().join("data")))
        );
        assert_eq!(
            find_executable("/abs/x", Some(&path)),
            Ok(PathBuf::from("/abs/x"))
        );
    }
}
