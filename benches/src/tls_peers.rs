//! TLS termination side by side: shardgate (`tls = { mode = "terminate" }`), HAProxy
//! (`mode tcp`, `bind ... ssl crt`) and nginx (`stream` with `listen ... ssl`, Debian's
//! `libnginx-mod-stream`), all with the same ECDSA P-256 certificate, TLS 1.2 and 1.3,
//! relaying plaintext to the same backend, pinned to the proxy CPUs.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::cpus::proxy_cpus;
use crate::peers::{free_port, spawn_shardgate, wait_listening, Peer};

/// The certificate both peers serve, written under `dir`: (cert path, key path, combined path).
pub fn write_certificate(dir: &Path) -> Option<(String, String, String)> {
    let certified = rcgen::generate_simple_self_signed(vec!["bench.example.test".to_string()]).ok()?;
    let cert = dir.join("bench.crt");
    let key = dir.join("bench.key");
    let combined = dir.join("bench.pem");
    std::fs::write(&cert, certified.cert.pem()).ok()?;
    std::fs::write(&key, certified.signing_key.serialize_pem()).ok()?;
    std::fs::write(&combined, format!("{}{}", certified.cert.pem(), certified.signing_key.serialize_pem())).ok()?;
    Some((cert.display().to_string(), key.display().to_string(), combined.display().to_string()))
}

/// shardgate terminating TLS on a loopback port, relaying to `backend_port`.
pub fn shardgate_tls(backend_port: u16) -> Option<Peer> {
    let dir = tempfile::tempdir().ok()?;
    let (cert, key, _) = write_certificate(dir.path())?;
    let port = free_port();
    let body = format!(
        "[proxy]\nlisten = [\"127.0.0.1\"]\n\n\
         [[certificates]]\nname = \"bench\"\ncert = \"{cert}\"\nkey = \"{key}\"\ndefault = true\n\n\
         [[routes]]\nname = \"bench-tls\"\nmatch = {{ ports = {port} }}\n\
         action = {{ type = \"forward\", targets = [{{ host = \"127.0.0.1\", port = {backend_port} }}], idle_timeout = \"300s\", tls = {{ mode = \"terminate\" }} }}\n"
    );
    let child = spawn_shardgate(dir.path(), &body)?;
    let peer = Peer::new("shardgate", port, child, dir);
    wait_listening(port).then_some(peer)
}

/// HAProxy terminating TLS (`mode tcp`, OpenSSL) on the proxy CPUs.
pub fn haproxy_tls(backend_port: u16) -> Option<Peer> {
    let cpus = proxy_cpus();
    let dir = tempfile::tempdir().ok()?;
    let (_, _, combined) = write_certificate(dir.path())?;
    let port = free_port();
    let cpu_map: String = cpus.iter().enumerate().map(|(i, c)| format!("    cpu-map 1/{} {c}\n", i + 1)).collect();
    let config = format!(
        "global\n    nbthread {n}\n{cpu_map}    maxconn 4000\n    ssl-default-bind-options ssl-min-ver TLSv1.2\n\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 300s\n    timeout server 300s\n\n\
         frontend fe\n    bind 127.0.0.1:{port} ssl crt {combined}\n    default_backend be\n\n\
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

/// nginx terminating TLS in its `stream` module (OpenSSL) on the proxy CPUs.
pub fn nginx_tls(backend_port: u16) -> Option<Peer> {
    let module = "/usr/lib/nginx/modules/ngx_stream_module.so";
    if !Path::new(module).exists() {
        eprintln!("nginx's stream module is missing ({module}); install Debian's libnginx-mod-stream");
        return None;
    }
    let cpus = proxy_cpus();
    let dir = tempfile::tempdir().ok()?;
    let (cert, key, _) = write_certificate(dir.path())?;
    let port = free_port();
    let width = cpus.iter().max().copied().unwrap_or(0) + 1;
    let affinity: Vec<String> =
        cpus.iter().map(|&c| (0..width).rev().map(|i| if i == c { '1' } else { '0' }).collect()).collect();
    let root = dir.path().display().to_string();
    let config = format!(
        "load_module {module};\ndaemon off;\nmaster_process on;\nworker_processes {n};\nworker_cpu_affinity {aff};\n\
         pid {root}/nginx.pid;\nerror_log stderr error;\n\
         events {{ worker_connections 4096; }}\n\
         stream {{\n  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n\
         \x20   ssl_protocols TLSv1.2 TLSv1.3;\n    proxy_timeout 300s;\n    proxy_pass 127.0.0.1:{backend_port};\n  }}\n}}\n",
        n = cpus.len(),
        aff = affinity.join(" ")
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, config).ok()?;
    let child = match Command::new("nginx").args(["-p", &root, "-c"]).arg(&path).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nginx not runnable ({e}); install Debian's nginx and libnginx-mod-stream");
            return None;
        }
    };
    let peer = Peer::new("nginx", port, child, dir);
    wait_listening(port).then_some(peer)
}
