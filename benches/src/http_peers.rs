//! The HTTP/1.1 reverse proxy side by side: shardgate (`protocol = "http"`), nginx
//! (`proxy_pass` with an upstream `keepalive` pool, HTTP/1.1 upstream) and HAProxy
//! (`mode http`, `http-reuse always`), each pinned to the proxy CPUs with one worker/thread
//! per CPU, keep-alive on both sides, access logs off, same backend.

use std::process::{Command, Stdio};

use crate::cpus::proxy_cpus;
use crate::peers::{free_port, spawn_shardgate, wait_listening, Peer};

/// shardgate proxying HTTP to `backend_port`.
pub fn shardgate_http(backend_port: u16) -> Option<Peer> {
    let dir = tempfile::tempdir().ok()?;
    let port = free_port();
    let body = format!(
        "[proxy]\nlisten = [\"127.0.0.1\"]\n\n[[routes]]\nname = \"bench-http\"\nmatch = {{ ports = {port} }}\n\
         action = {{ type = \"forward\", protocol = \"http\", targets = [{{ host = \"127.0.0.1\", port = {backend_port} }}] }}\n"
    );
    let child = spawn_shardgate(dir.path(), &body)?;
    let peer = Peer::new("shardgate", port, child, dir);
    wait_listening(port).then_some(peer)
}

/// nginx (Debian's) as a keep-alive reverse proxy.
pub fn nginx_http(backend_port: u16) -> Option<Peer> {
    let cpus = proxy_cpus();
    let dir = tempfile::tempdir().ok()?;
    let port = free_port();
    let affinity: Vec<String> = cpus
        .iter()
        .map(|&c| {
            let width = cpus.iter().max().copied().unwrap_or(0) + 1;
            (0..width).rev().map(|i| if i == c { '1' } else { '0' }).collect()
        })
        .collect();
    let root = dir.path().display().to_string();
    let config = format!(
        "daemon off;\nmaster_process on;\nworker_processes {n};\nworker_cpu_affinity {aff};\npid {root}/nginx.pid;\nerror_log stderr error;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {root}/body;\n  proxy_temp_path {root}/proxy;\n  fastcgi_temp_path {root}/fcgi;\n  uwsgi_temp_path {root}/uwsgi;\n  scgi_temp_path {root}/scgi;\n\
         \x20 keepalive_requests 1000000;\n\
         \x20 upstream be {{ server 127.0.0.1:{backend_port}; keepalive 64; }}\n\
         \x20 server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://be;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      proxy_buffering on;\n    }}\n  }}\n}}\n",
        n = cpus.len(),
        aff = affinity.join(" ")
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, config).ok()?;
    let child = match Command::new("nginx").args(["-p", &root, "-c"]).arg(&path).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nginx not runnable ({e}); install Debian's nginx");
            return None;
        }
    };
    let peer = Peer::new("nginx", port, child, dir);
    wait_listening(port).then_some(peer)
}

/// HAProxy (Debian's) in `mode http` with backend connection reuse.
pub fn haproxy_http(backend_port: u16) -> Option<Peer> {
    let cpus = proxy_cpus();
    let dir = tempfile::tempdir().ok()?;
    let port = free_port();
    let cpu_map: String = cpus.iter().enumerate().map(|(i, c)| format!("    cpu-map 1/{} {c}\n", i + 1)).collect();
    let config = format!(
        "global\n    nbthread {n}\n{cpu_map}    maxconn 4000\n\n\
         defaults\n    mode http\n    timeout connect 5s\n    timeout client 300s\n    timeout server 300s\n    timeout http-keep-alive 300s\n    option forwardfor\n    http-reuse always\n\n\
         frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n\n\
         backend be\n    server s1 127.0.0.1:{backend_port}\n",
        n = cpus.len()
    );
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, config).ok()?;
    let child = match Command::new("haproxy").args(["-db", "-f"]).arg(&path).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("haproxy not runnable ({e}); install Debian's haproxy");
            return None;
        }
    };
    let peer = Peer::new("haproxy", port, child, dir);
    wait_listening(port).then_some(peer)
}
