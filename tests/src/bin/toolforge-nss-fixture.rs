//! `toolforge-nss-fixture [rfc2307|rfc2307bis] [DEVELOPERS] > data.ldif`: writes the test and
//! demo directory as LDIF (deterministic), and with `--names DIR` the names it holds.
//! `toolforge-nss-fixture toolforge`: the benchmark's Toolforge-shaped RFC 2307bis directory
//! instead (35,000 users, tests/src/toolforge.rs).

use toolforge_nss_tests::fixture::{Fixture, Schema, Shape};
use toolforge_nss_tests::toolforge::ToolforgeShape;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut schema = Schema::Rfc2307;
    let mut shape = Shape::default();
    let mut names_dir = None;
    let mut toolforge = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "rfc2307" => schema = Schema::Rfc2307,
            "rfc2307bis" => schema = Schema::Rfc2307bis,
            "toolforge" => toolforge = true,
            "--names" => names_dir = it.next().cloned(),
            "--tools" => {
                shape.tools = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(shape.tools)
            }
            "--projects" => {
                shape.projects = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(shape.projects)
            }
            n if n.parse::<usize>().is_ok() => {
                shape.developers = n.parse().unwrap_or(shape.developers);
                shape.big_group = shape.big_group.min(shape.developers);
            }
            other => {
                eprintln!("usage: toolforge-nss-fixture [rfc2307|rfc2307bis|toolforge] [DEVELOPERS] [--tools N] [--projects N] [--names DIR]\nunknown argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    let f = if toolforge {
        Fixture::toolforge(ToolforgeShape::bench())
    } else {
        Fixture::generate(schema, shape)
    };
    print!("{}", f.ldif);
    if let Some(dir) = names_dir {
        std::fs::create_dir_all(&dir).expect("names dir");
        let users: String = f
            .users
            .values()
            .map(|u| format!("{} {}\n", u.name, u.uid))
            .collect();
        let groups: String = f
            .groups
            .values()
            .map(|g| format!("{} {} {}\n", g.name, g.gid, g.members.len()))
            .collect();
        std::fs::write(format!("{dir}/users.txt"), users).expect("users.txt");
        std::fs::write(format!("{dir}/groups.txt"), groups).expect("groups.txt");
    }
}
