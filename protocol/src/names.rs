//! Which user and group names may be looked up. Both the module (before it sends anything) and
//! the daemon (before it builds a filter, and for names coming from the directory) apply these
//! rules, so a name such as `*)(uid=*`, one with a NUL byte or a 10 KB one never reaches LDAP.
//!
//! The accepted set is the POSIX portable user name set plus a trailing `$` (machine
//! accounts): `[A-Za-z0-9_.][A-Za-z0-9_.-]*[$]?`, 1 to [`MAX_NAME_LEN`] bytes, not `.` or `..`.

/// Longest name accepted, in bytes (glibc's `LOGIN_NAME_MAX` is 256 including the NUL).
pub const MAX_NAME_LEN: usize = 255;

/// Whether `name` may be looked up or served.
pub fn is_valid_name(name: &[u8]) -> bool {
    let Some((&first, rest)) = name.split_first() else {
        return false;
    };
    if name.len() > MAX_NAME_LEN || name == b"." || name == b".." {
        return false;
    }
    let body = match rest.split_last() {
        Some((&b'$', body)) => body,
        _ => rest,
    };
    (first.is_ascii_alphanumeric() || first == b'_' || first == b'.')
        && body
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_developer_tool_and_machine_names() {
        for n in [
            "alice",
            "tools.my-tool",
            "bob_2",
            "_svc",
            "host$",
            "a",
            "project-p001",
        ] {
            assert!(is_valid_name(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn refuses_injection_nul_empty_and_long_names() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for n in [
            "",
            "*",
            "*)(uid=*",
            "a\\00b",
            "a b",
            "-rf",
            ".",
            "..",
            "a$b",
            "é",
            "x\u{0}y",
            long.as_str(),
        ] {
            assert!(!is_valid_name(n.as_bytes()), "{n:?}");
        }
        assert!(!is_valid_name(b"\xff\xfe"));
        assert!(is_valid_name("a".repeat(MAX_NAME_LEN).as_bytes()));
    }
}
