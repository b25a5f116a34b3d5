//! The router's counters in Prometheus' text format. Counters live in the models and deployments
//! themselves, found without a lookup on the request path; rendering walks them.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::Router;

/// Appends the router's metrics to `out` in Prometheus' text exposition format.
pub fn render(router: &Router, out: &mut String) {
    let counters: [(&str, &str); 3] = [
        ("sluice_upstream_attempts_total", "Calls sent to upstream providers."),
        (
            "sluice_upstream_rate_limited_total",
            "429s answered by upstream providers.",
        ),
        (
            "sluice_failovers_total",
            "Failed upstream attempts moved on to another candidate.",
        ),
    ];
    for (i, (name, help)) in counters.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for route in router.models() {
            for deployment in route.deployments() {
                let c = deployment.counters();
                let value = [&c.attempts, &c.upstream_rate_limited, &c.failovers][i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "{name}{{model=\"{}\",provider=\"{}\"}} {value}",
                    escape(route.name()),
                    escape(deployment.provider().name())
                );
            }
        }
    }
    let per_model: [(&str, &str); 2] = [
        (
            "sluice_queue_waits_total",
            "Requests that waited in the queue for upstream capacity.",
        ),
        (
            "sluice_rejections_total",
            "Requests refused with 429 because no upstream key had capacity in time.",
        ),
    ];
    for (i, (name, help)) in per_model.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for route in router.models() {
            let c = route.counters();
            let value = [&c.queue_waits, &c.rejections][i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{model=\"{}\"}} {value}", escape(route.name()));
        }
    }
}

/// Label values escape backslashes, quotes and newlines.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
