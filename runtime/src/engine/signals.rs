//! Signal handling of the parent: the signals carton forwards or reacts to are blocked before
//! the clone and read from a signalfd afterwards, so none can slip through in between. The
//! child unblocks them right before exec.

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, sigaction};

/// Signals carton relays to the container, plus SIGCHLD (container exit) and SIGWINCH
/// (terminal resize) which it handles itself.
pub fn watched() -> SigSet {
    let mut set = SigSet::empty();
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGCONT,
        Signal::SIGWINCH,
        Signal::SIGCHLD,
    ] {
        set.add(sig);
    }
    set
}

/// Blocks the watched signals; returns the previous mask to restore.
pub fn block_watched() -> nix::Result<SigSet> {
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&watched()), Some(&mut old))?;
    Ok(old)
}

pub fn restore_mask(mask: &SigSet) {
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(mask), None);
}

/// In the child, right before exec: default dispositions and an empty mask, whatever carton
/// had, so the user's program starts like any freshly exec'd process.
pub fn reset_for_exec() {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL is always sound.
        let _ = unsafe { sigaction(sig, &default) };
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}
