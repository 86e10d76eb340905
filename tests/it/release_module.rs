//! The module as releases ship it (`scripts/build-module.sh`): it must load in every glibc
//! image from the 2.17 baseline up, so it may need no `GLIBC_` symbol version newer than
//! 2.17 and no library but glibc's own; it is stripped and small. glibc 2.17 itself cannot
//! run here: this check is the proof for it (the root filesystem tests prove what can run).

use std::path::Path;
use std::process::Command;

use toolforge_nss_tests::paths::{module_so, release_module_so};

/// The baseline: the oldest glibc the release module loads in.
const BASELINE: (u32, u32) = (2, 17);

/// Libraries of glibc itself (the libc6 package, in every glibc image). Zig links its own
/// unwinder statically, so not even libgcc_s.so.1 is needed.
const GLIBC_LIBS: [&str; 6] = [
    "libc.so.6",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
];

fn tool(args: &[&str], file: &Path) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("run {} (binutils): {e}", args[0]));
    assert!(
        out.status.success(),
        "{args:?} {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every `GLIBC_x.y[.z]` version the file's dynamic symbols need, as (major, minor).
fn glibc_versions(file: &Path) -> Vec<(u32, u32)> {
    let text = tool(&["objdump", "-T"], file);
    let mut v: Vec<(u32, u32)> = text
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|ver| {
            let mut it = ver.split('.').map(|n| n.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn needed(file: &Path) -> Vec<String> {
    tool(&["readelf", "-d", "-W"], file)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split('[').nth(1)?.trim_end_matches(']').to_owned()))
        .collect()
}

/// What is wrong with `file` as a release module (empty: nothing).
fn baseline_violations(file: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    for v in glibc_versions(file) {
        if v > BASELINE {
            bad.push(format!(
                "needs GLIBC_{}.{} (baseline {}.{})",
                v.0, v.1, BASELINE.0, BASELINE.1
            ));
        }
    }
    for lib in needed(file) {
        if !GLIBC_LIBS.contains(&lib.as_str()) {
            bad.push(format!("needs {lib}, not part of glibc"));
        }
    }
    bad
}

#[test]
fn the_release_module_needs_nothing_newer_than_the_glibc_baseline() {
    let m = release_module_so();
    let versions = glibc_versions(&m);
    assert!(
        !versions.is_empty(),
        "no GLIBC_ versions read from {}",
        m.display()
    );
    assert_eq!(
        baseline_violations(&m),
        Vec::<String>::new(),
        "{}",
        m.display()
    );
    let soname = tool(&["readelf", "-d", "-W"], &m);
    assert!(
        soname.contains("Library soname: [libnss_toolforge.so.2]"),
        "{soname}"
    );
    let sections = tool(&["readelf", "-S", "-W"], &m);
    assert!(
        !sections.contains(".debug_") && !sections.contains(".symtab"),
        "{} is not stripped",
        m.display()
    );
    let size = std::fs::metadata(&m).expect("stat module").len();
    eprintln!(
        "release module: {size} bytes, newest GLIBC_{}.{}, needs {:?}",
        versions.last().unwrap().0,
        versions.last().unwrap().1,
        needed(&m)
    );
    assert!(size < 1 << 20, "the release module is {size} bytes");
}

#[test]
fn the_check_catches_a_module_linked_against_a_newer_glibc() {
    // The development module is linked against this machine's glibc (2.34 or newer on every
    // supported build machine: pthread_key_create@GLIBC_2.34): the check must refuse it.
    let host = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .expect("getconf");
    let host = String::from_utf8_lossy(&host.stdout);
    let minor: u32 = host
        .trim()
        .rsplit('.')
        .next()
        .and_then(|m| m.parse().ok())
        .expect("glibc version");
    if minor < 34 {
        eprintln!("SKIPPED: this machine's glibc ({host}) is too old to make a counterexample");
        return;
    }
    let bad = baseline_violations(&module_so());
    assert!(
        bad.iter().any(|b| b.contains("GLIBC_2.3")),
        "the check passed a module built against {host}: {bad:?}"
    );
}
