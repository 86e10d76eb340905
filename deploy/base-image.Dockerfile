# The lines a base image needs (Debian, Ubuntu: any glibc 2.17 or newer). Use the release
# module: `make module` builds it against the glibc 2.17 baseline, stripped, as
# target/x86_64-unknown-linux-gnu/module/libnss_toolforge.so (the .deb ships the same file);
# copy it into the build context as libnss_toolforge.so. Not `cargo build --release`: that
# development build needs the build machine's glibc. tests/it/images.rs applies exactly these
# steps to bullseye, bookworm and trixie root filesystems. For arm64, build with ARCH=aarch64
# and copy to /usr/lib/aarch64-linux-gnu/ instead.
FROM debian:bookworm-slim
# The module, under its SONAME, in the multiarch lib dir (setuid programs such as sudo ignore
# LD_LIBRARY_PATH, and the module ignores TOOLFORGE_NSS_DIR in them).
COPY libnss_toolforge.so /usr/lib/x86_64-linux-gnu/libnss_toolforge.so.2
# Local files first, then the node daemon.
RUN sed -i -E 's/^(passwd|group):.*/\1: files toolforge/' /etc/nsswitch.conf \
 && grep -E '^(passwd|group):' /etc/nsswitch.conf
