//! The manual page `docs/man/rxenstored.8` is generated from the command
//! line definition, so that it cannot drift from it: this test fails when
//! the two differ. `UPDATE_MAN_PAGE=1 cargo test -p rxenstored --test
//! man_page` writes the page anew.

use clap::CommandFactory;
use rxenstored::cli::Options;
use std::path::Path;

fn render() -> Vec<u8> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Options::command())
        .section("8")
        .manual("System Manager's Manual")
        .source(format!("rxenstored {}", env!("CARGO_PKG_VERSION")))
        .render(&mut out)
        .expect("render");
    out
}

#[test]
fn the_manual_page_matches_the_command_line() {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/man/rxenstored.8");
    let want = render();
    if std::env::var_os("UPDATE_MAN_PAGE").is_some() {
        std::fs::write(&page, &want).expect("write the page");
    }
    let have = std::fs::read(&page).unwrap_or_default();
    assert!(
        have == want,
        "{} is not what the command line gives: run UPDATE_MAN_PAGE=1 cargo test -p rxenstored --test man_page",
        page.display()
    );
    let text = String::from_utf8_lossy(&want);
    for needle in [
        "\\-\\-pid\\-file",
        "\\-\\-config",
        "\\-\\-oxenstored\\-conf",
        "SIGHUP",
    ] {
        assert!(text.contains(needle), "the page lacks {needle}");
    }
}
