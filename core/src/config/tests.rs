//! Config validation tests: one per kind of mistake, and that all are reported at once.

use super::*;

fn problems(toml: &str) -> Vec<String> {
    match Config::parse(toml, "edge.toml") {
        Ok(_) => Vec::new(),
        Err(errors) => errors.problems.iter().map(|p| p.to_string()).collect(),
    }
}

fn has(problems: &[String], needle: &str) -> bool {
    problems.iter().any(|p| p.contains(needle))
}

#[test]
fn embedded_default_is_valid() {
    let config = Config::embedded_default().expect("embedded default must validate");
    assert_eq!(config.routes.len(), 2);
    assert_eq!(config.route_ports(), vec![8000, 8080]);
    assert!(config.routes.iter().any(|r| r.name == "demo-http" && r.is_http()));
    assert_eq!(config.runtime.data_dir, PathBuf::from("./shardgate-data"));
}

#[test]
fn a_full_forward_route_is_typed() {
    let config = Config::parse(
        r#"
        [proxy]
        listen = ["127.0.0.1", "::1"]
        [[routes]]
        name = "web"
        priority = 7
        match = { ports = [80, "8000-8001"], client_ip = ["10.0.0.0/8", "2001:db8::/32"] }
        security = { ip_allow = ["10.1.0.0/16"], ip_block = ["10.1.2.3"] }
        [routes.action]
        type = "forward"
        targets = [{ host = "localhost", port = 8080 }, { host = "127.0.0.2", port = "preserve" }]
        balance = "least-connections"
        connect_timeout = "2s"
        idle_timeout = "1m"
        max_connections = 100
        proxy_protocol = "v2"
        "#,
        "edge.toml",
    )
    .expect("valid");
    let route = &config.routes[0];
    assert_eq!(route.priority, 7);
    assert_eq!(route.matcher.ports.iter().collect::<Vec<_>>(), vec![80, 8000, 8001]);
    let RouteAction::Forward(f) = &route.action else { panic!("forward expected") };
    assert_eq!(f.balance, Balance::LeastConnections);
    assert_eq!(f.connect_timeout, Duration::from_secs(2));
    assert_eq!(f.idle_timeout, Duration::from_secs(60));
    assert_eq!(f.max_connections, Some(100));
    assert_eq!(f.proxy_protocol, Some(ProxyProtocol::V2));
    assert_eq!(f.targets[1].port, TargetPort::Preserve);
    assert_eq!(f.targets[1].socket_addr(8001), Some("127.0.0.2:8001".parse().expect("addr")));
    assert!(!f.targets[0].addresses.is_empty());
    assert!(route.security.permits("10.1.9.9".parse().expect("ip")));
    assert!(!route.security.permits("10.1.2.3".parse().expect("ip")));
    assert!(!route.security.permits("10.2.0.1".parse().expect("ip")));
}

#[test]
fn every_problem_is_reported_at_once_with_file_route_and_field() {
    let found = problems(
        r#"
        [runtime]
        drain_timeout = "soon"
        colour = "blue"

        [[routes]]
        name = "api"
        match = { ports = ["9000-8000", 0], domains = ["a.*.com"], client_ip = ["10.0.0.300/8"] }
        security = { ip_block = ["nope"] }
        action = { type = "forward", targets = [{ host = "no such host!", port = 70000 }], balance = "random", connect_timeout = "x", proxy_protocol = "v3", tls = { mode = "passthrough" } }

        [[routes]]
        name = "api"
        match = { ports = 81, speed = "fast" }
        action = { type = "teleport" }

        [[routes]]
        match = { ports = 82 }
        action = { type = "reject", targets = [] }
        "#,
    );
    let expected = [
        "edge.toml: [runtime] drain_timeout: `soon` is not a duration",
        "edge.toml: [runtime] colour: unknown field",
        "edge.toml: route `api`: match.ports: range 9000-8000 is reversed",
        "edge.toml: route `api`: match.ports: port 0 is outside 1-65535",
        "edge.toml: route `api`: match.domains: `a.*.com`: a wildcard is only allowed",
        "edge.toml: route `api`: match.client_ip: `10.0.0.300/8` is not an IP address or CIDR",
        "edge.toml: route `api`: security.ip_block: `nope` is not an IP address or CIDR",
        "edge.toml: route `api`: action.targets[0].port: port 70000 is outside 1-65535",
        "edge.toml: route `api`: action.balance: `random` is not round-robin or least-connections",
        "edge.toml: route `api`: action.connect_timeout: `x` is not a duration",
        "edge.toml: route `api`: action.proxy_protocol: `v3` is not v1, v2 or none",
        "edge.toml: route `api`: name: another route already has this name",
        "edge.toml: route `api`: match.speed: unknown field",
        "edge.toml: route `api`: action.type: `teleport` is not an action type",
        "edge.toml: route `#3`: name: every route needs a non-empty name",
        "edge.toml: route `#3`: action.targets: not allowed for type `reject`",
    ];
    for e in expected {
        assert!(has(&found, e), "missing problem {e:?} in {found:#?}");
    }
}

#[test]
fn unresolvable_target_is_an_error() {
    let found = problems(
        r#"
        [[routes]]
        name = "dead"
        match = { ports = 9000 }
        action = { type = "forward", targets = [{ host = "does-not-exist.invalid", port = 80 }] }
        "#,
    );
    assert!(has(&found, "route `dead`: action.targets[0].host: `does-not-exist.invalid` does not resolve"), "{found:#?}");
}

#[test]
fn conflicting_routes_on_one_port_are_an_error() {
    let found = problems(
        r#"
        [[routes]]
        name = "a"
        match = { ports = "8000-8010" }
        action = { type = "reject" }
        [[routes]]
        name = "b"
        match = { ports = 8005 }
        action = { type = "reject" }
        [[routes]]
        name = "c"
        priority = 1
        match = { ports = 8005 }
        action = { type = "reject" }
        "#,
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(has(&found, "route `b`: match: conflicts with route `a`"), "{found:#?}");
}

#[test]
fn domains_need_tls_and_terminate_needs_a_certificate() {
    let found = problems(
        r#"
        [[routes]]
        name = "plain"
        match = { ports = 443, domains = "example.com" }
        action = { type = "forward", targets = [{ host = "127.0.0.1", port = 1 }] }
        [[routes]]
        name = "term"
        match = { ports = 444 }
        action = { type = "forward", targets = [{ host = "127.0.0.1", port = 1 }], tls = { mode = "terminate" } }
        [[routes]]
        name = "named"
        match = { ports = 445 }
        action = { type = "forward", targets = [{ host = "127.0.0.1", port = 1 }], tls = { mode = "terminate", certificate = "nope" } }
        [[routes]]
        name = "acme"
        match = { ports = 446 }
        action = { type = "forward", targets = [{ host = "127.0.0.1", port = 1 }], tls = { mode = "terminate", certificate = "auto" } }
        [[certificates]]
        name = "broken"
        cert = "/nonexistent/cert.pem"
        key = "/nonexistent/key.pem"
        "#,
    );
    assert!(has(&found, "route `plain`: match.domains: domains are matched against TLS SNI"), "{found:#?}");
    assert!(has(&found, "route `term`: action.tls: terminate needs a certificate"), "{found:#?}");
    assert!(has(&found, "route `named`: action.tls.certificate: no [[certificates]] entry is named `nope`"), "{found:#?}");
    assert!(has(&found, "route `acme`: action.tls.certificate: \"auto\" needs an [acme] section"), "{found:#?}");
    assert!(has(&found, "[certificates `broken`] cert: cannot read `/nonexistent/cert.pem`"), "{found:#?}");
}

#[test]
fn bad_toml_unknown_sections_and_shapes() {
    assert!(has(&problems("[[routes]\nname="), "edge.toml: not valid TOML"));
    assert!(has(&problems("[mystery]\n"), "edge.toml: mystery: unknown section"));
    assert!(has(&problems("routes = 5\n"), "[routes] must be an array of tables"));
    assert!(has(&problems("[[routes]]\nname = \"x\"\n"), "route `x`: match: missing"));
    assert!(has(&problems("[proxy]\nlisten = [\"localhost\"]\n"), "[proxy] listen: `localhost` is not an IP address"));
    assert!(has(&problems("[runtime]\nshards = [4096]\n"), "[runtime] shards: CPU 4096 is not available"));
}

#[test]
fn too_many_listening_ports_is_an_error() {
    let found = problems(
        r#"
        [[routes]]
        name = "all"
        match = { ports = "1-65535" }
        action = { type = "reject" }
        "#,
    );
    assert!(has(&found, "routes ask for 65535 listening ports"), "{found:#?}");
}

#[test]
fn missing_file_is_reported_with_its_name() {
    let err = Config::load(Path::new("/nonexistent/edge.toml")).expect_err("missing");
    assert!(err.to_string().contains("/nonexistent/edge.toml: cannot read the file"));
}

#[test]
fn embedded_default_serves_radius_on_unprivileged_loopback_ports() {
    let config = Config::embedded_default().expect("embedded default must validate");
    let radius = config.radius.expect("the embedded default shows [radius]");
    assert_eq!(radius.listen, vec!["127.0.0.1".parse::<IpAddr>().expect("ip")]);
    assert!(radius.auth_port >= 1024 && radius.acct_port >= 1024);
    assert!(radius.mac_auth.enabled && !radius.vlans.is_empty() && !radius.clients.is_empty());
}

#[test]
fn radius_section_is_typed_and_defaults_to_no_radius() {
    assert!(Config::parse("", "edge.toml").expect("empty config is valid").radius.is_none());
    let config = Config::parse(
        "[radius]\nlisten = [\"127.0.0.1\", \"::1\"]\nauth_port = 11812\nacct_port = 11813\n\
         [[radius.clients]]\nname = \"sw\"\nsource = \"10.0.0.0/8\"\nsecret = \"s\"\n",
        "edge.toml",
    )
    .expect("valid");
    let radius = config.radius.expect("radius");
    assert_eq!(radius.listen.len(), 2);
    assert_eq!((radius.auth_port, radius.acct_port), (11812, 11813));
    assert!(radius.require_message_authenticator);
}

#[test]
fn radius_problems_are_reported_under_the_radius_section_all_at_once() {
    let found = problems(
        "[radius]\nacct_port = 1812\nlisten = []\n\
         [[radius.clients]]\nname = \"sw\"\nsource = \"10.0.0.0/33\"\nsecret = \"\"\n\
         [[radius.vlans]]\nmac = \"zz:*\"\nvlan = 5000\n",
    );
    assert!(has(&found, "edge.toml: [radius] listen: no listen address"), "{found:?}");
    assert!(has(&found, "[radius] acct_port: must differ from auth_port"), "{found:?}");
    assert!(has(&found, "[radius] clients[0] (\"sw\").source"), "{found:?}");
    assert!(has(&found, "[radius] clients[0] (\"sw\").secret: must not be empty"), "{found:?}");
    assert!(has(&found, "[radius] vlans[0].mac"), "{found:?}");
    assert!(has(&found, "[radius] vlans[0].vlan: VLAN 5000 is outside 1..=4094"), "{found:?}");
    assert_eq!(found.len(), 6, "{found:?}");
}

#[test]
fn radius_unknown_keys_and_bad_types_are_problems() {
    let found = problems("[radius]\nauth_prot = 1812\n");
    assert!(has(&found, "[radius]") && has(&found, "auth_prot"), "{found:?}");
    let found = problems("[radius]\nlisten = [\"not-an-ip\"]\n");
    assert!(has(&found, "[radius]"), "{found:?}");
}

#[test]
fn http_routes_are_checked_with_file_route_and_field() {
    let problems = problems(
        r#"
        [http]
        header_timeout = "soon"
        max_headers = 0
        [[routes]]
        name = "bad-redirect"
        match = { ports = 8000, path = "api" }
        action = { type = "redirect", status = 200, to = "https://{host}{path}" }
        [[routes]]
        name = "bad-serve"
        match = { ports = 8001 }
        action = { type = "serve", root = "/definitely/not/here", targets = [] }
        [[routes]]
        name = "tcp-with-path"
        match = { ports = 8002, path = "/x" }
        action = { type = "forward", protocol = "tcp", targets = [{ host = "127.0.0.1", port = 1 }] }
        [[routes]]
        name = "mixed-http"
        match = { ports = 8003 }
        action = { type = "forward", protocol = "http", targets = [{ host = "127.0.0.1", port = 1 }] }
        [[routes]]
        name = "mixed-tcp"
        match = { ports = 8003, client_ip = "10.0.0.0/8" }
        action = { type = "forward", targets = [{ host = "127.0.0.1", port = 1 }] }
        [[routes]]
        name = "limited-tcp"
        match = { ports = 8004 }
        action = { type = "forward", targets = [{ host = "127.0.0.1", port = 1 }] }
        limits = { requests = "5r/s" }
        [[routes]]
        name = "limited-http"
        match = { ports = 8005 }
        action = { type = "forward", protocol = "http", targets = [{ host = "127.0.0.1", port = 1 }] }
        limits = { requests = "fast" }
        [[routes]]
        name = "http-with-proxy-header"
        match = { ports = 8006, path = "/" }
        action = { type = "forward", targets = [{ host = "127.0.0.1", port = 1 }], proxy_protocol = "v2" }
        "#,
    );
    for needle in [
        "[http] header_timeout",
        "[http] max_headers",
        "route `bad-redirect`: match.path: `api` must start with `/`",
        "route `bad-redirect`: action.status: 200 is not a redirect status",
        "route `bad-serve`: action.root",
        "route `bad-serve`: action.targets: not allowed for type `serve`",
        "route `tcp-with-path`: match.path",
        "port 8003 would carry both the HTTP route `mixed-http` and the TCP route `mixed-tcp`",
        "route `limited-http`: limits.requests: `fast` is not a rate",
        "route `limited-tcp`: limits: request and connection limits apply to HTTP routes",
        "route `http-with-proxy-header`: action.proxy_protocol: not for HTTP routes",
    ] {
        assert!(has(&problems, needle), "missing {needle:?} in {problems:#?}");
    }
}

#[test]
fn admin_section_is_typed_with_defaults() {
    let config = Config::embedded_default().expect("embedded default");
    let admin = config.admin.expect("the embedded default has [admin]");
    assert_eq!(admin.listen, DEFAULT_ADMIN_LISTEN.parse().expect("addr"));
    assert_eq!(admin.users.len(), 1);
    assert!(admin.user_directory().verify("admin", b"shardgate-demo"));
    assert!(!admin.user_directory().verify("admin", b"wrong"));
    assert!(!admin.metrics_open && admin.latency_histograms && admin.tls.is_none());
    let minimal = Config::parse("[admin]\n", "edge.toml").expect("minimal");
    assert_eq!(minimal.admin.map(|a| a.token_ttl), Some(DEFAULT_TOKEN_TTL));
}

#[test]
fn admin_section_problems_are_all_reported() {
    let found = problems(
        r#"
        [admin]
        listen = "localhost"
        certificate = "missing"
        token_ttl = "1s"
        colour = "red"
        users = [
          { username = "ops", password_hash = "plain-text" },
          { username = "ops2" },
          { username = "a:b", password_hash = "$6$salt$hash" },
        ]
        "#,
    );
    assert!(has(&found, "[admin] listen: `localhost` is not an address:port"), "{found:?}");
    assert!(has(&found, "[admin] certificate: no [[certificates]] entry is named `missing`"), "{found:?}");
    assert!(has(&found, "[admin] token_ttl"), "{found:?}");
    assert!(has(&found, "[admin] colour: unknown field"), "{found:?}");
    assert!(has(&found, "[admin] users[0].password_hash: not a supported password hash"), "{found:?}");
    assert!(has(&found, "[admin] users[1]: needs `username` and `password_hash`"), "{found:?}");
    assert!(has(&found, "[admin] users[2].username"), "{found:?}");
    let found = problems("[admin]\ncert = \"a.pem\"\n");
    assert!(has(&found, "[admin] cert: `cert` and `key` go together"), "{found:?}");
}
