//! Home directory templates, as SSSD's `override_homedir`/`fallback_homedir`:
//! `%u` user name, `%U` uid number, `%l` first letter of the name, `%h` or `%o` the home
//! directory the directory gave (`%o` is SSSD's spelling), `%%` a percent sign. Parsed once at
//! load time, so an unknown escape is a config error, never a surprise at lookup time.

use serde::Deserialize;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Name,
    Uid,
    FirstLetter,
    DirectoryHome,
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HomeTemplate {
    source: String,
    parts: Vec<Part>,
}

impl TryFrom<String> for HomeTemplate {
    type Error = String;
    fn try_from(source: String) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            let part = match chars.next() {
                Some('%') => {
                    text.push('%');
                    continue;
                }
                Some('u') => Part::Name,
                Some('U') => Part::Uid,
                Some('l') => Part::FirstLetter,
                Some('h') | Some('o') => Part::DirectoryHome,
                Some(other) => {
                    return Err(format!(
                        "unknown escape %{other} in {source:?} (known: %u %U %l %h %o %%)"
                    ))
                }
                None => return Err(format!("{source:?} ends with a lone %")),
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(part);
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        if !source.starts_with('/') && !source.starts_with("%h") && !source.starts_with("%o") {
            return Err(format!("{source:?} does not give an absolute path"));
        }
        if source.contains('\0') {
            return Err("contains a NUL byte".into());
        }
        Ok(HomeTemplate { source, parts })
    }
}

impl HomeTemplate {
    /// Expands the template for one user.
    pub fn expand(&self, name: &str, uid: u32, directory_home: &str) -> String {
        let mut out = String::with_capacity(self.source.len() + name.len());
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Name => out.push_str(name),
                Part::Uid => out.push_str(&uid.to_string()),
                Part::FirstLetter => out.extend(name.chars().next()),
                Part::DirectoryHome => out.push_str(directory_home),
            }
        }
        out
    }
}

impl fmt::Display for HomeTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Result<HomeTemplate, String> {
        HomeTemplate::try_from(s.to_string())
    }

    #[test]
    fn expands_every_escape() {
        let tpl = t("/home/%l/%u-%U%%").unwrap();
        assert_eq!(tpl.expand("alice", 1234, "/x"), "/home/a/alice-1234%");
        assert_eq!(
            t("%h/sub").unwrap().expand("bob", 1, "/data/project/bob"),
            "/data/project/bob/sub"
        );
        assert_eq!(t("/srv/%o").unwrap().expand("bob", 1, "home"), "/srv/home");
    }

    #[test]
    fn refuses_unknown_escapes_lone_percent_and_relative_paths() {
        assert!(t("/home/%x").unwrap_err().contains("%x"));
        assert!(t("/home/%").unwrap_err().contains("lone"));
        assert!(t("home/%u").unwrap_err().contains("absolute"));
    }
}
