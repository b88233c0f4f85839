//! Terminals and stdin: `-t` gives the container a terminal of the size of carton's, resizes and
//! ^C reach it, carton's terminal is restored on every exit path; `-i` pipes stdin through and
//! without it stdin is not read.
//!
//! Each `-t` test plays the user's terminal: a pty whose slave is carton's stdin, stdout, stderr
//! and controlling terminal (see `conformance::pty`).

use conformance::pty::{Pty, termios_diff};
use conformance::{Carton, host, lines, signal_exit_code};
use nix::sys::signal::Signal;
use rstest::rstest;

/// With `-t`: stdin, stdout and stderr are terminals, of carton's terminal's size; TERM=xterm.
#[test]
fn tty_gives_the_container_a_terminal() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let pty = Pty::open(37, 101);
    let cmd = ct.run([
        "-t",
        "busybox",
        "sh",
        "-c",
        "for fd in 0 1 2; do test -t $fd && echo fd$fd-tty; done; echo \"size=$(stty size)\"; echo \"TERM=$TERM\"",
    ]);
    let (status, out) = pty.spawn(cmd.to_std()).wait();
    assert_eq!(status.code(), Some(0), "{out}");
    let l = lines(&out);
    for expected in ["fd0-tty", "fd1-tty", "fd2-tty", "size=37 101", "TERM=xterm"] {
        assert!(
            l.iter().any(|x| x == expected),
            "missing {expected:?} in {out:?}"
        );
    }
    ct.finish();
}

#[test]
fn dev_console_exists_with_tty() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let pty = Pty::open(24, 80);
    let cmd = ct.run([
        "-t",
        "busybox",
        "sh",
        "-c",
        "test -c /dev/console && echo console-is-a-char-device",
    ]);
    let (status, out) = pty.spawn(cmd.to_std()).wait();
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(out.contains("console-is-a-char-device"), "{out:?}");
    ct.finish();
}

/// Resizing carton's terminal sends SIGWINCH into the container, with the new size.
#[test]
fn window_resize_reaches_the_container() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let pty = Pty::open(24, 80);
    let cmd = ct.run([
        "-t",
        "busybox",
        "sh",
        "-c",
        "trap 'echo \"winch $(stty size)\"; exit 0' WINCH; echo ready; \
         i=0; while [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; echo no-winch; exit 1",
    ]);
    let mut run = pty.spawn(cmd.to_std());
    run.read_until("ready");
    run.resize(50, 120);
    run.read_until("winch 50 120");
    let (status, out) = run.wait();
    assert_eq!(status.code(), Some(0), "{out}");
    ct.finish();
}

/// ^C typed on carton's terminal with `-it` interrupts the container's foreground process.
#[test]
fn ctrl_c_reaches_the_container() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let pty = Pty::open(24, 80);
    let cmd = ct.run([
        "-i",
        "-t",
        "busybox",
        "sh",
        "-c",
        "trap 'echo got-int; exit 5' INT; echo ready; \
         i=0; while [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; exit 1",
    ]);
    let mut run = pty.spawn(cmd.to_std());
    run.read_until("ready");
    run.write(b"\x03");
    run.read_until("got-int");
    let (status, out) = run.wait();
    assert_eq!(status.code(), Some(5), "{out}");
    ct.finish();
}

/// Typed input reaches the container through `-it`.
#[test]
fn typed_input_reaches_the_container() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let pty = Pty::open(24, 80);
    let cmd = ct.run([
        "-i",
        "-t",
        "busybox",
        "sh",
        "-c",
        "echo ready; read line; echo \"got:$line\"",
    ]);
    let mut run = pty.spawn(cmd.to_std());
    run.read_until("ready");
    run.write(b"hello\r");
    run.read_until("got:hello");
    let (status, out) = run.wait();
    assert_eq!(status.code(), Some(0), "{out}");
    ct.finish();
}

#[derive(Debug, Clone, Copy)]
enum Ending {
    /// The command exits by itself with this code.
    Exits(i32),
    /// The container's init is SIGKILLed from the host.
    Killed,
}

/// carton puts its terminal in raw mode for `-it` and restores it exactly — whatever the way
/// the run ends: success, failure, the container killed, carton's own error.
#[rstest]
#[case::success(&["busybox", "true"], Ending::Exits(0))]
#[case::failure(&["busybox", "sh", "-c", "exit 3"], Ending::Exits(3))]
#[case::command_not_found(&["busybox", "nosuchcmd"], Ending::Exits(127))]
#[case::unknown_image(&["nosuchimage"], Ending::Exits(125))]
#[case::container_killed(&["busybox", "sh", "-c", "echo ready; sleep 60"], Ending::Killed)]
fn terminal_is_restored(#[case] args: &[&str], #[case] ending: Ending) {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let pty = Pty::open(24, 80);
    // A terminal set up unlike any default, so "restored" cannot mean "reset to sane".
    let mut custom = pty.termios();
    custom.c_cc[libc::VKILL] = 0x0b;
    custom.c_lflag &= !libc::ECHOCTL;
    custom.c_iflag |= libc::IUTF8;
    pty.set_termios(&custom);
    let before = pty.termios();

    let mut full = vec!["-i", "-t"];
    full.extend_from_slice(args);
    let mut run = pty.spawn(ct.run(full).to_std());
    let expected = match ending {
        Ending::Exits(code) => code,
        Ending::Killed => {
            run.read_until("ready");
            let init = host::container_init_pid(run.pid(), conformance::DEADLINE)
                .expect("no container init (a descendant of carton with NSpid ending in 1)");
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(init), Signal::SIGKILL).unwrap();
            signal_exit_code(Signal::SIGKILL)
        }
    };
    let (status, out) = run.wait();
    assert_eq!(status.code(), Some(expected), "{args:?}: {out:?}");
    let after = run.termios();
    let diff = termios_diff(&before, &after);
    assert!(
        diff.is_empty(),
        "terminal not restored after {args:?}: {diff:?}"
    );
    ct.finish();
}

/// `-i` without `-t`: stdin is piped through, byte for byte, and EOF ends the container's read.
#[rstest]
#[case::line(b"hi\n".to_vec(), &["busybox", "cat"], "hi\n")]
#[case::one_mebibyte(vec![b'x'; 1 << 20], &["busybox", "wc", "-c"], "1048576\n")]
fn stdin_is_piped_with_i(#[case] input: Vec<u8>, #[case] args: &[&str], #[case] expected: &str) {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let mut full = vec!["-i"];
    full.extend_from_slice(args);
    ct.run(full)
        .write_stdin(input)
        .assert()
        .success()
        .stdout(expected.to_string());
    ct.finish();
}

/// Without `-i` the container's stdin is not carton's: `cat` sees EOF at once.
#[test]
fn stdin_is_not_read_without_i() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    ct.run(["busybox", "cat"])
        .write_stdin("secret\n")
        .assert()
        .success()
        .stdout("");
    ct.finish();
}
