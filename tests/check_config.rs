//! `shardgate check-config`: exit codes and the problem list users see.

use std::process::Command;

use shardgate_tests::shardgate_bin;

fn check(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, text).expect("write");
    let out = Command::new(shardgate_bin()).arg("check-config").arg(&path).output().expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_valid_config_exits_zero() {
    let (code, stdout, _) = check(
        "[[routes]]\nname = \"ok\"\nmatch = { ports = [\"7000-7001\"] }\naction = { type = \"reject\" }\n",
    );
    assert_eq!(code, 0);
    assert!(stdout.contains("valid (1 route, ports [7000, 7001])"), "{stdout}");
}

#[test]
fn every_problem_is_listed_with_file_route_and_field() {
    let (code, _, stderr) = check(
        r#"
[proxy]
listen = ["not-an-ip"]
[[routes]]
name = "api"
match = { ports = "9000-8000", client_ip = "300.1.1.1" }
action = { type = "forward", targets = [{ host = "nowhere.invalid", port = 80 }], typo = 1 }
[[routes]]
name = "api"
match = { ports = 1 }
action = { type = "reject" }
"#,
    );
    assert_eq!(code, 1, "{stderr}");
    for needle in [
        "edge.toml: [proxy] listen: `not-an-ip` is not an IP address",
        "edge.toml: route `api`: match.ports: range 9000-8000 is reversed",
        "edge.toml: route `api`: match.client_ip: `300.1.1.1` is not an IP address or CIDR",
        "edge.toml: route `api`: action.targets[0].host: `nowhere.invalid` does not resolve",
        "edge.toml: route `api`: action.typo: unknown field",
        "edge.toml: route `api`: name: another route already has this name",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
    assert!(stderr.starts_with("6 config problems:"), "{stderr}");
}

#[test]
fn a_missing_file_and_broken_toml_are_errors() {
    let out = Command::new(shardgate_bin()).args(["check-config", "/nonexistent/x.toml"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.toml: cannot read the file"));
    let (code, _, stderr) = check("[[routes]\n");
    assert_eq!(code, 1);
    assert!(stderr.contains("not valid TOML"), "{stderr}");
}

#[test]
fn run_with_a_bad_config_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[routes]]\nname = \"x\"\nmatch = { ports = 0 }\naction = { type = \"reject\" }\n").expect("write");
    let out = Command::new(shardgate_bin()).args(["run", "--config"]).arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("route `x`: match.ports: port 0 is outside 1-65535"));
}
