//! Child processes that cannot outlive the tests: each gets `PR_SET_PDEATHSIG(SIGKILL)`.
//! The kernel sends it when the spawning *thread* exits, so processes shared by many tests are
//! spawned from a keeper thread that never ends.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::OnceLock;

/// Spawns `cmd` so that it is killed when the spawning thread ends.
pub fn spawn_tied(cmd: &mut Command) -> std::io::Result<Child> {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    };
    cmd.spawn()
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs `f` on the process-lifetime keeper thread (for processes shared by many tests).
pub fn on_keeper<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    static KEEPER: OnceLock<std::sync::Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let tx = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("process-keeper".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
                // The sender lives in a static, so this loop never ends: children stay tied
                // to this thread until the process exits.
            })
            .expect("spawn keeper thread");
        std::sync::Mutex::new(tx)
    });
    let (back_tx, back_rx) = mpsc::channel();
    tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(Box::new(move || {
            let _ = back_tx.send(f());
        }))
        .expect("keeper thread alive");
    back_rx.recv().expect("keeper ran the job")
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Stops `pid` with SIGSTOP and returns once every one of its threads is stopped. kill(2)
/// only queues the signal: a thread running on another CPU (or waiting for one, on a loaded
/// machine) goes on for a moment, long enough to answer a request sent right after. A
/// process that is gone (or a zombie) counts as stopped.
pub fn freeze(pid: u32) {
    signal(pid, libc::SIGSTOP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let states = thread_states(pid);
        if states.iter().all(|s| matches!(s, 'T' | 't' | 'Z' | 'X')) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} not stopped 10 s after SIGSTOP: thread states {states:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Resumes a process stopped by [`freeze`].
pub fn thaw(pid: u32) {
    signal(pid, libc::SIGCONT);
}

/// The state letter (`R`, `S`, `D`, `T`...) of each thread of `pid`, from
/// `/proc/PID/task/TID/stat`; empty when the process is gone.
fn thread_states(pid: u32) -> Vec<char> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        // `pid (comm) S ...`: comm may contain spaces and parentheses; the state follows the
        // last `)`.
        .filter_map(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
        })
        .collect()
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("addr")
        .port()
}
