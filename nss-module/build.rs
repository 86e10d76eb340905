//! Gives the cdylib the SONAME glibc looks for: `libnss_toolforge.so.2` (NSS service `toolforge`).
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnss_toolforge.so.2");
}
