//! The binary starts, describes itself and exits cleanly.

use std::process::Command;

#[test]
fn help_and_version_exit_cleanly() {
    let help = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout).unwrap();
    assert!(
        text.contains("Usage: loadtest") && text.contains("contest"),
        "{text}"
    );
    let version = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(version.status.success());
    assert!(String::from_utf8(version.stdout)
        .unwrap()
        .contains(env!("CARGO_PKG_VERSION")));
}
