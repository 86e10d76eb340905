//! `make demo`: a throwaway slapd with sample data on loopback, the daemon against it, and
//! `getent`/`id` answered through the module in a private mount namespace; then everything
//! is stopped. Uses the same harness as the tests.

use toolforge_nss_tests::daemon::Daemon;
use toolforge_nss_tests::fixture::{Fixture, BIG_GROUP};
use toolforge_nss_tests::nss::Nss;
use toolforge_nss_tests::slapd::Slapd;
use toolforge_nss_tests::toolforge::{daemon_config, ToolforgeShape, MANY_GROUPS_USER};

fn show(nss: &Nss, args: &[&str]) {
    println!("$ {}", args.join(" "));
    let run = nss.run(args);
    print!("{}", run.stdout);
    if run.code != Some(0) {
        println!(
            "(exit {}{})",
            run.code.unwrap_or(-1),
            if run.stderr.is_empty() {
                String::new()
            } else {
                format!(": {}", run.stderr.trim())
            }
        );
    }
    println!();
}

fn main() {
    // Toolforge's shape and configuration: rfc2307bis (`member` DNs), the whole tree as base.
    let shape = ToolforgeShape::demo();
    let fixture = Fixture::toolforge(shape);
    println!(
        "== toolforge-nss demo ==\nsample directory: {} users ({} tool accounts), {} groups",
        fixture.users.len(),
        shape.tools,
        fixture.groups.len()
    );
    let slapd = Slapd::start(&fixture);
    println!("slapd (throwaway) on {}", slapd.uri());
    let uri = slapd.uri();
    let daemon = Daemon::start_with(|run, cache| daemon_config(&uri, run, cache, "", ""));
    println!("toolforge-nssd serving {}", daemon.socket().display());
    println!("nsswitch.conf (private mount namespace): passwd: files toolforge / group: files toolforge\n");
    let nss = Nss::new(&daemon.runtime_dir(), "files toolforge");
    let dev = &fixture.users[&fixture.groups[BIG_GROUP].members[0]];
    let tool = fixture
        .users
        .values()
        .find(|u| u.name.starts_with("tools."))
        .expect("tools");
    show(&nss, &["getent", "passwd", &dev.name]);
    show(&nss, &["id", &dev.name]);
    show(&nss, &["getent", "passwd", &tool.name]);
    show(&nss, &["getent", "group", &tool.name]);
    show(&nss, &["getent", "group", "project-nest-top"]);
    show(&nss, &["id", MANY_GROUPS_USER]);
    show(&nss, &["getent", "initgroups", &dev.name]);
    show(&nss, &["getent", "passwd", "no-such-user"]);
    drop(nss);
    drop(daemon);
    drop(slapd);
    println!("stopped toolforge-nssd and slapd; nothing was installed into the system's NSS configuration.");
}
