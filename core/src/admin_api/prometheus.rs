//! `/metrics`: the merged stats in the Prometheus text exposition format (version 0.0.4).
//!
//! Owns: naming (`shardgate_<group>_<counter>`; route, shard and operation as labels) and the
//! rendering of [`MergedStats`]. Every numeric counter of a group is exported, so counters
//! other issues add to `Counters`, `DnsCounters`, `RadiusCounters`, `SmtpCounters` or
//! `DeliveryStats` appear without a change here; the mail queue's size is a gauge. Latencies are exported as summaries (quantiles 0.5, 0.9, 0.99, 1 in seconds).

use std::fmt::Write as _;

use crate::stats::MergedStats;

/// The exposition text of `stats`.
pub fn render(stats: &MergedStats) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# TYPE shardgate_config_generation gauge\nshardgate_config_generation {}", stats.config_generation);
    for (route, counters) in &stats.routes {
        numbers(&mut out, "route", &[("route", route)], &serde_json::to_value(counters).unwrap_or_default());
    }
    for shard in &stats.shards {
        let index = shard.shard.to_string();
        let cpu = shard.cpu.to_string();
        let labels = [("shard", index.as_str()), ("cpu", cpu.as_str())];
        let mut totals = crate::stats::Counters::default();
        for counters in shard.routes.values() {
            totals.add(counters);
        }
        numbers(&mut out, "shard", &labels, &serde_json::to_value(totals).unwrap_or_default());
        let _ = writeln!(out, "shardgate_shard_unrouted{} {}", label_text(&labels), shard.unrouted);
        let _ = writeln!(out, "shardgate_shard_bad_client_hello{} {}", label_text(&labels), shard.bad_client_hello);
        numbers(&mut out, "dns", &labels, &serde_json::to_value(shard.dns).unwrap_or_default());
        numbers(&mut out, "radius", &labels, &serde_json::to_value(shard.radius).unwrap_or_default());
        numbers(&mut out, "smtp", &labels, &serde_json::to_value(shard.smtp).unwrap_or_default());
    }
    // Mail on the control core: the delivery engine's counters and the queue's size.
    numbers(&mut out, "mail_delivery", &[], &serde_json::to_value(stats.mail_delivery).unwrap_or_default());
    if let Some(queued) = stats.mail_queue_messages {
        let _ = writeln!(out, "# TYPE shardgate_mail_queue_messages gauge\nshardgate_mail_queue_messages {queued}");
    }
    let _ = writeln!(out, "# TYPE shardgate_latency_seconds summary");
    for (operation, summary) in &stats.latency {
        for (quantile, micros) in [("0.5", summary.p50_us), ("0.9", summary.p90_us), ("0.99", summary.p99_us), ("1", summary.max_us)] {
            let _ = writeln!(
                out,
                "shardgate_latency_seconds{{operation=\"{}\",quantile=\"{quantile}\"}} {}",
                escape(operation),
                micros as f64 / 1e6
            );
        }
        let _ = writeln!(out, "shardgate_latency_seconds_count{{operation=\"{}\"}} {}", escape(operation), summary.count);
    }
    for certificate in &stats.certificates {
        if let Some(not_after) = certificate.not_after {
            let _ = writeln!(out, "shardgate_certificate_not_after_seconds{{name=\"{}\"}} {not_after}", escape(&certificate.name));
        }
    }
    out
}

/// One line per numeric field of `value` (a JSON object of counters, nested objects prefixed).
fn numbers(out: &mut String, group: &str, labels: &[(&str, &str)], value: &serde_json::Value) {
    let Some(fields) = value.as_object() else { return };
    let labels = label_text(labels);
    for (name, value) in fields {
        if let Some(n) = value.as_u64() {
            let _ = writeln!(out, "shardgate_{group}_{name}{labels} {n}");
        } else if value.is_object() {
            // Nested groups (DNS `rrl`): their counters get the group's name as a prefix.
            let mut nested = String::new();
            numbers(&mut nested, &format!("{group}_{name}"), &[], value);
            for line in nested.lines() {
                if let Some((metric, n)) = line.split_once(' ') {
                    let _ = writeln!(out, "{metric}{labels} {n}");
                }
            }
        }
    }
}

fn label_text(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    format!("{{{}}}", inner.join(","))
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Counters, ShardStats};

    #[test]
    fn renders_routes_shards_and_latency() {
        let mut shard = ShardStats { shard: 1, cpu: 3, ..Default::default() };
        shard.routes.insert("we\"b".into(), Counters { accepted: 7, ..Default::default() });
        let mut stats = MergedStats::merge(2, &[shard]);
        stats.latency.insert("dns_query".into(), crate::latency::LatencySummary { count: 3, p50_us: 20, p90_us: 30, p99_us: 40, max_us: 50 });
        stats.shards[0].smtp.messages_accepted = 5;
        stats.mail_delivery.deferred = 2;
        stats.mail_queue_messages = Some(4);
        let text = render(&stats);
        assert!(text.contains("shardgate_smtp_messages_accepted{shard=\"1\",cpu=\"3\"} 5"), "{text}");
        assert!(text.contains("shardgate_smtp_limits_rate_limited{shard=\"1\",cpu=\"3\"} 0"), "{text}");
        assert!(text.contains("shardgate_mail_delivery_deferred 2"), "{text}");
        assert!(text.contains("shardgate_mail_queue_messages 4"), "{text}");
        assert!(text.contains("shardgate_route_accepted{route=\"we\\\"b\"} 7"), "{text}");
        assert!(text.contains("shardgate_shard_accepted{shard=\"1\",cpu=\"3\"} 7"), "{text}");
        assert!(text.contains("shardgate_latency_seconds{operation=\"dns_query\",quantile=\"0.99\"} 0.00004"), "{text}");
        assert!(text.contains("shardgate_latency_seconds_count{operation=\"dns_query\"} 3"), "{text}");
        assert!(text.contains("shardgate_config_generation 2"));
    }
}
