//! `make demo`: a throwaway slapd with sample data on loopback, the daemon against it, and
//! `getent`/`id` answered through the module in a private mount namespace; then everything
//! is stopped. Uses the same harness as the tests.

use toolforge_nss_tests::daemon::Daemon;
use toolforge_nss_tests::fixture::{Fixture, Schema, Shape};
use toolforge_nss_tests::nss::Nss;
use toolforge_nss_tests::slapd::Slapd;

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
    let shape = Shape {
        developers: 300,
        tools: 20,
        projects: 5,
        big_group: 200,
    };
    let fixture = Fixture::generate(Schema::Rfc2307, shape);
    println!(
        "== toolforge-nss demo ==\nsample directory: {} users ({} tool accounts), {} groups",
        fixture.users.len(),
        shape.tools,
        fixture.groups.len()
    );
    let slapd = Slapd::start(&fixture);
    println!("slapd (throwaway) on {}", slapd.uri());
    let daemon = Daemon::start(&[slapd.uri()], Schema::Rfc2307, "");
    println!("toolforge-nssd serving {}", daemon.socket().display());
    println!("nsswitch.conf (private mount namespace): passwd: files toolforge / group: files toolforge\n");
    let nss = Nss::new(&daemon.runtime_dir(), "files toolforge");
    let dev = fixture.developer(true);
    let tool = fixture.tool();
    show(&nss, &["getent", "passwd", &dev.name]);
    show(&nss, &["id", &dev.name]);
    show(&nss, &["getent", "passwd", &tool.name]);
    show(&nss, &["getent", "group", &tool.name]);
    show(&nss, &["getent", "group", "project-p001"]);
    show(&nss, &["getent", "initgroups", &dev.name]);
    show(&nss, &["getent", "passwd", "no-such-user"]);
    drop(nss);
    drop(daemon);
    drop(slapd);
    println!("stopped toolforge-nssd and slapd; nothing was installed into the system's NSS configuration.");
}
