//! Builds LDAP search filters. Every value placed in a filter goes through [`escape`]
//! (RFC 4515: `*`, `(`, `)`, `\` and NUL become `\2a`, `\28`, `\29`, `\5c`, `\00`), and the
//! only way to build a filter from a value is [`equality`].

use std::fmt::Write;

/// Escapes a value for use inside an LDAP filter (RFC 4515 section 3).
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' | '(' | ')' | '\\' | '\0' => {
                let _ = write!(out, "\\{:02x}", c as u32);
            }
            _ => out.push(c),
        }
    }
    out
}

/// `(&BASE(ATTR=VALUE))` with `VALUE` escaped; `base` is the map's configured filter.
pub fn equality(base: &str, attr: &str, value: &str) -> String {
    format!("(&{base}({attr}={}))", escape(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_rfc4515_special() {
        assert_eq!(escape("*)(uid=*"), "\\2a\\29\\28uid=\\2a");
        assert_eq!(escape("a\\00b"), "a\\5c00b");
        assert_eq!(escape("a\0b"), "a\\00b");
        assert_eq!(escape("plain.name-1"), "plain.name-1");
        assert_eq!(escape("é*"), "é\\2a");
    }

    #[test]
    fn equality_wraps_the_map_filter() {
        assert_eq!(
            equality("(objectClass=posixAccount)", "uid", "a*"),
            "(&(objectClass=posixAccount)(uid=a\\2a))"
        );
    }
}
