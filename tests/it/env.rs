//! One slapd and one daemon per schema, shared by the tests that only read. They are started
//! on the harness's keeper thread (so they live as long as the test process) and stopped and
//! removed by an `atexit` handler when the test binary exits.

use std::sync::{Mutex, OnceLock};

use toolforge_nss_tests::daemon::Daemon;
use toolforge_nss_tests::fixture::{Fixture, Schema, Shape};
use toolforge_nss_tests::process::on_keeper;
use toolforge_nss_tests::slapd::Slapd;

pub struct Env {
    pub fixture: Fixture,
    pub slapd: Slapd,
    pub daemon: Daemon,
}

static LIVE: Mutex<Vec<&'static Env>> = Mutex::new(Vec::new());

extern "C" fn stop_all() {
    // Runs at exit: statics are never dropped, so stop what `shared` started.
    if let Ok(mut live) = LIVE.lock() {
        for env in live.drain(..) {
            // SAFETY: the Env is leaked and never used after exit begins; dropping its
            // contents in place stops the processes and removes the temp dirs.
            let env = env as *const Env as *mut Env;
            unsafe { std::ptr::drop_in_place(env) };
        }
    }
}

fn start(schema: Schema) -> &'static Env {
    let env = on_keeper(move || {
        let fixture = Fixture::generate(schema, Shape::default());
        let slapd = Slapd::start(&fixture);
        let daemon = Daemon::start(&[slapd.uri()], schema, "");
        Box::leak(Box::new(Env {
            fixture,
            slapd,
            daemon,
        })) as &'static Env
    });
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    if live.is_empty() {
        // SAFETY: registering a plain extern "C" fn.
        unsafe { libc::atexit(stop_all) };
    }
    live.push(env);
    env
}

/// The shared environment for `schema`.
pub fn shared(schema: Schema) -> &'static Env {
    static RFC2307: OnceLock<&'static Env> = OnceLock::new();
    static RFC2307BIS: OnceLock<&'static Env> = OnceLock::new();
    match schema {
        Schema::Rfc2307 => RFC2307.get_or_init(|| start(schema)),
        Schema::Rfc2307bis => RFC2307BIS.get_or_init(|| start(schema)),
    }
}
