# The lines a base image needs (Debian). Build the module with `cargo build --release`
# first; it is target/release/libnss_toolforge.so.
FROM debian:bookworm-slim
# The module, under its SONAME, in the multiarch lib dir (setuid programs such as sudo ignore
# LD_LIBRARY_PATH, and the module ignores TOOLFORGE_NSS_DIR in them).
COPY libnss_toolforge.so /usr/lib/x86_64-linux-gnu/libnss_toolforge.so.2
# Local files first, then the node daemon.
RUN sed -i -E 's/^(passwd|group):.*/\1: files toolforge/' /etc/nsswitch.conf \
 && grep -E '^(passwd|group):' /etc/nsswitch.conf
