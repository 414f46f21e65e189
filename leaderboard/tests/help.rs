//! The `leaderboard` binary as a user first meets it.

#[test]
fn leaderboard_binary_has_help() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_leaderboard"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("HTTP_ADDR"), "{help}");
}
