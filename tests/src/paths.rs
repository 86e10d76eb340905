//! Where the built artefacts are: next to the test binary's `deps/` directory.

use std::path::PathBuf;

/// `target/<profile>`, found from the running test binary (`target/<profile>/deps/it-*`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a directory");
    if deps.ends_with("deps") {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

fn artefact(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`; `make test` does both)",
        p.display()
    );
    p
}

/// The daemon binary.
pub fn daemon_bin() -> PathBuf {
    artefact("toolforge-nssd")
}

/// The operator CLI.
pub fn ctl_bin() -> PathBuf {
    artefact("toolforge-nssctl")
}

/// The NSS module as Cargo builds it (installed as `libnss_toolforge.so.2`).
pub fn module_so() -> PathBuf {
    artefact("libnss_toolforge.so")
}

/// The NSS module as releases ship it (`scripts/build-module.sh`: against the glibc 2.17
/// baseline, stripped): `target/<arch>-unknown-linux-gnu/module/libnss_toolforge.so`.
pub fn release_module_so() -> PathBuf {
    let p = target_dir()
        .parent()
        .expect("target/<profile> has a parent")
        .join(format!(
            "{}-unknown-linux-gnu/module/libnss_toolforge.so",
            std::env::consts::ARCH
        ));
    assert!(
        p.exists(),
        "{} is missing: build it as releases are (`./scripts/build-module.sh`; `make test` does)",
        p.display()
    );
    p
}
