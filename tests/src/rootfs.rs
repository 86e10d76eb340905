//! Real Debian root filesystems, to run programs inside images as a tool's container would.
//!
//! * [`rootfs`] gives the pristine `mmdebstrap --variant=minbase` root filesystem of a suite
//!   (bullseye, bookworm, trixie: [`SUITES`]), cached under
//!   `/var/cache/toolforge-nss-tests/rootfs/` (or `$TOOLFORGE_NSS_ROOTFS_CACHE`) and made by
//!   `scripts/make-rootfs.sh` when missing. [`rootfs_with`] is the same with Debian packages
//!   added at creation (e.g. `libnss-sss`), cached under its own name. Both return `Err(why)`
//!   when this machine cannot make one (not root, no mmdebstrap, the mirror lacks the suite):
//!   the caller skips that suite and prints `why`.
//! * [`Image`] lays a layer over such a root filesystem (which is never written): the
//!   base-image recipe `deploy/base-image.Dockerfile` applied as written (its `COPY` of the
//!   module and its `RUN`), plus what a pod would mount ([`Image::add_dir`]). Each
//!   [`Image::command`] runs in private mount and pid namespaces (`unshare`), in a read-only
//!   overlay of the two, with the daemon's runtime directory bind-mounted read-only at
//!   `/run/toolforge-nss` (or nothing mounted there), chrooted, as a given uid and gid, with an
//!   empty environment (`PATH` and `LANG=C` only).
//!
//! ```no_run
//! use toolforge_nss_tests::rootfs::{rootfs, Image, As};
//! let base = match rootfs("bookworm") { Ok(p) => p, Err(why) => { eprintln!("skip: {why}"); return } };
//! let image = Image::build(&base, &toolforge_nss_tests::paths::release_module_so());
//! let run = image.run(Some(std::path::Path::new("/run/toolforge-nss")), As::ROOT, &["getent", "passwd", "root"]);
//! assert_eq!(run.code, Some(0));
//! ```

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::nss::Run;
use crate::process::spawn_tied;

/// The Debian suites the tests run in (Toolforge's images are built on these).
pub const SUITES: [&str; 3] = ["bullseye", "bookworm", "trixie"];

/// Where the image's module socket directory is (the DaemonSet's hostPath, mounted read-only).
pub const RUNTIME_DIR_IN_IMAGE: &str = "/run/toolforge-nss";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The pristine minbase root filesystem of `suite`, made on first use (a minute or so).
pub fn rootfs(suite: &str) -> Result<PathBuf, String> {
    rootfs_with(suite, &[])
}

/// As [`rootfs`], with `packages` installed at creation (`mmdebstrap --include`), cached as
/// `SUITE+PACKAGE+...`. Never modify the returned directory: build an [`Image`] over it.
pub fn rootfs_with(suite: &str, packages: &[&str]) -> Result<PathBuf, String> {
    let out = Command::new(repo_root().join("scripts/make-rootfs.sh"))
        .arg(suite)
        .args(packages)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run scripts/make-rootfs.sh: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if !out.status.success() {
        return Err(format!(
            "no {suite} root filesystem on this machine: {stderr}"
        ));
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !dir.join("etc/debian_version").exists() {
        return Err(format!("{} is not a root filesystem", dir.display()));
    }
    Ok(dir)
}

/// Who a command runs as (numeric: no lookup decides it).
#[derive(Clone, Copy, Debug)]
pub struct As {
    pub uid: u32,
    pub gid: u32,
}

impl As {
    pub const ROOT: As = As { uid: 0, gid: 0 };
}

/// A root filesystem with the base-image recipe applied in a layer of its own.
pub struct Image {
    base: PathBuf,
    dir: tempfile::TempDir,
}

/// The `COPY` and `RUN` steps of a Dockerfile (continuation lines joined; comments dropped).
fn recipe_steps(dockerfile: &str) -> Vec<(String, String)> {
    let mut steps = Vec::new();
    let mut cur = String::new();
    for line in dockerfile.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        let (op, rest) = cur.split_once(' ').unwrap_or((&cur, ""));
        steps.push((op.to_ascii_uppercase(), rest.trim().to_owned()));
        cur.clear();
    }
    steps
}

impl Image {
    /// Applies `deploy/base-image.Dockerfile` to `base` in a new layer: `COPY` puts `module`
    /// where the recipe says, `RUN` runs inside the image (chroot) as root. Panics on any
    /// other instruction than `FROM`, `COPY` and `RUN`, or when a step fails.
    pub fn build(base: &Path, module: &Path) -> Image {
        let dir = tempfile::Builder::new()
            .prefix("tf-image-")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).expect("chmod");
        for d in ["layer", "work", "root"] {
            std::fs::create_dir(dir.path().join(d)).expect("mkdir");
        }
        let image = Image {
            base: base.to_owned(),
            dir,
        };
        let recipe = repo_root().join("deploy/base-image.Dockerfile");
        let text = std::fs::read_to_string(&recipe).expect("read deploy/base-image.Dockerfile");
        for (op, arg) in recipe_steps(&text) {
            match op.as_str() {
                "FROM" => {}
                "COPY" => {
                    let (src, dest) = arg.split_once(' ').expect("COPY SRC DEST");
                    assert_eq!(src, "libnss_toolforge.so", "the recipe copies the module");
                    let to = image.layer().join(dest.trim().trim_start_matches('/'));
                    std::fs::create_dir_all(to.parent().expect("dest has a dir")).expect("mkdir");
                    std::fs::copy(module, &to).expect("copy the module into the image");
                    std::fs::set_permissions(&to, PermissionsExt::from_mode(0o644))
                        .expect("chmod module");
                }
                "RUN" => image.run_in_layer(&arg),
                other => panic!("{}: unhandled instruction {other}", recipe.display()),
            }
        }
        // The mount point a pod gets from its volume (the runtime directory).
        image.add_dir(RUNTIME_DIR_IN_IMAGE, As::ROOT, 0o755);
        image
    }

    /// The layer the recipe wrote (and [`Image::add_dir`] writes).
    pub fn layer(&self) -> PathBuf {
        self.dir.path().join("layer")
    }

    /// The unmodified root filesystem under the layer.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// `sh -c script` as root inside a writable overlay whose upper dir is the layer.
    fn run_in_layer(&self, script: &str) {
        let d = self.dir.path();
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                "set -e; mount -t overlay overlay -o \"lowerdir=$1,upperdir=$2,workdir=$3\" \"$4\"; \
                 exec chroot \"$4\" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /bin/sh -c \"$5\"",
            )
            .arg("sh")
            .arg(&self.base)
            .arg(d.join("layer"))
            .arg(d.join("work"))
            .arg(d.join("root"))
            .arg(script)
            .output()
            .expect("run unshare");
        assert!(
            out.status.success(),
            "recipe step `RUN {script}` failed in {}: {}{}",
            self.base.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates `path` (absolute, inside the image) in the layer, owned by `owner`, with `mode`:
    /// what a pod would mount there (e.g. a tool's home `/data/project/NAME`).
    pub fn add_dir(&self, path: &str, owner: As, mode: u32) {
        let p = self.layer().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&p).expect("mkdir in layer");
        std::fs::set_permissions(&p, PermissionsExt::from_mode(mode)).expect("chmod");
        std::os::unix::fs::chown(&p, Some(owner.uid), Some(owner.gid)).expect("chown");
    }

    /// Creates a file at `path` inside the image, owned by `owner` (uid and gid).
    pub fn add_file(&self, path: &str, contents: &str, owner: As) {
        let p = self.layer().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().expect("file has a dir")).expect("mkdir in layer");
        std::fs::write(&p, contents).expect("write in layer");
        std::os::unix::fs::chown(&p, Some(owner.uid), Some(owner.gid)).expect("chown");
    }

    /// `args` inside the image, as `who`, in private mount and pid namespaces; `runtime` is
    /// bind-mounted read-only at [`RUNTIME_DIR_IN_IMAGE`] (`None`: nothing is mounted there,
    /// as when the admission webhook failed open).
    pub fn command(&self, runtime: Option<&Path>, who: As, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--pid",
            "--fork",
            "--kill-child",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            "set -e; r=$3; mount -t overlay overlay -o \"ro,lowerdir=$1:$2\" \"$r\"; \
             mount -t proc proc \"$r/proc\"; \
             if [ -n \"$4\" ]; then mount -o bind,ro \"$4\" \"$r$5\"; fi; \
             u=$6; g=$7; shift 7; \
             exec chroot --userspec=\"$u:$g\" --groups=\"$g\" \"$r\" \
               /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C \"$@\"",
            "sh",
        ])
        .arg(d.join("layer"))
        .arg(&self.base)
        .arg(d.join("root"))
        .arg(runtime.map(|p| p.as_os_str()).unwrap_or_default())
        .arg(RUNTIME_DIR_IN_IMAGE)
        .arg(who.uid.to_string())
        .arg(who.gid.to_string())
        .args(args)
        .env_remove("TOOLFORGE_NSS_DIR")
        .stdin(Stdio::null());
        cmd
    }

    /// Runs [`Image::command`] to completion.
    pub fn run(&self, runtime: Option<&Path>, who: As, args: &[&str]) -> Run {
        let start = Instant::now();
        let out = self
            .command(runtime, who, args)
            .output()
            .expect("run unshare (util-linux)");
        let elapsed = start.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !stderr.contains("unshare: ")
                && !stderr.contains("mount: ")
                && !stderr.contains("chroot: "),
            "cannot enter the image {}: {stderr}",
            self.base.display()
        );
        Run {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
            code: out.status.code(),
            elapsed,
        }
    }

    /// Starts [`Image::command`] with stdout piped, tied to the calling thread (killed when it
    /// ends). For long-running processes inside the image.
    pub fn spawn(&self, runtime: Option<&Path>, who: As, args: &[&str]) -> Child {
        spawn_tied(
            self.command(runtime, who, args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .expect("spawn unshare")
    }
}

#[cfg(test)]
mod tests {
    use super::recipe_steps;

    #[test]
    fn recipe_steps_join_continuations_and_drop_comments() {
        let s = recipe_steps("# c\nFROM x\nCOPY a /b/c\nRUN one \\\n && two\n");
        assert_eq!(
            s,
            vec![
                ("FROM".into(), "x".into()),
                ("COPY".into(), "a /b/c".into()),
                ("RUN".into(), "one  && two".into())
            ]
        );
    }
}
