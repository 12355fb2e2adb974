//! A Prometheus text exposition writer (format 0.0.4): each metric family
//! gets its `# HELP` and `# TYPE` lines once, then its samples; label values
//! and help text are escaped as the format requires. Each subsystem renders
//! its own families into one [`Exposition`] (`render` beside its view type).

use std::fmt::{Display, Write as _};

/// The type of a metric family (`# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }

    /// By the naming convention: `_total` names count, others are gauges.
    pub fn of_name(name: &str) -> Kind {
        if name.ends_with("_total") {
            Kind::Counter
        } else {
            Kind::Gauge
        }
    }
}

/// Label pairs of one sample, in order.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// The text being written.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition {
            out: String::with_capacity(16 * 1024),
        }
    }

    pub fn into_string(self) -> String {
        self.out
    }

    /// Starts a family: writes its HELP and TYPE; samples follow.
    pub fn family<'a>(&'a mut self, name: &'a str, help: &str, kind: Kind) -> Family<'a> {
        let _ = writeln!(
            self.out,
            "# HELP {name} {}\n# TYPE {name} {}",
            escape(help, false),
            kind.as_str()
        );
        Family { w: self, name }
    }

    /// A family of one unlabelled sample.
    pub fn single(&mut self, name: &str, help: &str, kind: Kind, value: impl Display) {
        self.family(name, help, kind).sample(&[], value);
    }

    /// A counter of one unlabelled sample.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.single(name, help, Kind::Counter, value);
    }

    /// A gauge of one unlabelled sample.
    pub fn gauge(&mut self, name: &str, help: &str, value: impl Display) {
        self.single(name, help, Kind::Gauge, value);
    }

    /// A histogram: cumulative `buckets` (upper bound, count), then `+Inf`
    /// (= `count`), `_sum` and `_count`, each with `labels`.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: Labels<'_>,
        buckets: impl IntoIterator<Item = (f64, u64)>,
        count: u64,
        sum: f64,
    ) {
        self.family(name, help, Kind::Histogram)
            .histogram(labels, buckets, count, sum);
    }
}

/// The samples of one family.
pub struct Family<'a> {
    w: &'a mut Exposition,
    name: &'a str,
}

impl Family<'_> {
    /// One sample: `name{labels} value`.
    pub fn sample(&mut self, labels: Labels<'_>, value: impl Display) -> &mut Self {
        self.suffixed("", labels, None, value)
    }

    /// One series of a histogram family: cumulative `buckets` (upper
    /// bound, count), then `+Inf` (= `count`), `_sum` and `_count`, each
    /// with `labels` (several series share a family's HELP and TYPE).
    pub fn histogram(
        &mut self,
        labels: Labels<'_>,
        buckets: impl IntoIterator<Item = (f64, u64)>,
        count: u64,
        sum: f64,
    ) -> &mut Self {
        for (le, n) in buckets {
            self.suffixed("_bucket", labels, Some(&le.to_string()), n);
        }
        self.suffixed("_bucket", labels, Some("+Inf"), count);
        self.suffixed("_sum", labels, None, sum);
        self.suffixed("_count", labels, None, count)
    }

    /// One sample of a derived series (`_bucket`, `_sum`, `_count`), with
    /// an `le` label last when given.
    fn suffixed(
        &mut self,
        suffix: &str,
        labels: Labels<'_>,
        le: Option<&str>,
        value: impl Display,
    ) -> &mut Self {
        let o = &mut self.w.out;
        o.push_str(self.name);
        o.push_str(suffix);
        let le = le.map(|v| ("le", v));
        let mut all = labels.iter().copied().chain(le).peekable();
        if all.peek().is_some() {
            o.push('{');
            for (i, (k, v)) in all.enumerate() {
                if i > 0 {
                    o.push(',');
                }
                let _ = write!(o, "{k}=\"{}\"", escape(v, true));
            }
            o.push('}');
        }
        let _ = writeln!(o, " {value}");
        self
    }
}

/// Escapes a label value (`\`, `"`, newline) or help text (`\`, newline).
fn escape(s: &str, quote: bool) -> std::borrow::Cow<'_, str> {
    if !s.contains(['\\', '\n', '"']) {
        return s.into();
    }
    let mut o = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '"' if quote => o.push_str("\\\""),
            c => o.push(c),
        }
    }
    o.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaping() {
        let mut w = Exposition::new();
        w.family("podlb_x_total", "Things, by kind.", Kind::Counter)
            .sample(&[("kind", "a")], 1)
            .sample(&[("kind", "q\"uo\\te\nnl")], 2);
        w.gauge("podlb_y", "A back\\slash\nand a newline.", 7);
        w.histogram(
            "podlb_h_seconds",
            "Times.",
            &[("vrid", "7")],
            [(0.001, 1), (0.5, 2)],
            3,
            0.25,
        );
        w.histogram("podlb_g_seconds", "Times.", &[], [(1.0, 0)], 0, 0.0);
        assert_eq!(
            w.into_string(),
            "# HELP podlb_x_total Things, by kind.\n# TYPE podlb_x_total counter\n\
             podlb_x_total{kind=\"a\"} 1\n\
             podlb_x_total{kind=\"q\\\"uo\\\\te\\nnl\"} 2\n\
             # HELP podlb_y A back\\\\slash\\nand a newline.\n# TYPE podlb_y gauge\npodlb_y 7\n\
             # HELP podlb_h_seconds Times.\n# TYPE podlb_h_seconds histogram\n\
             podlb_h_seconds_bucket{vrid=\"7\",le=\"0.001\"} 1\n\
             podlb_h_seconds_bucket{vrid=\"7\",le=\"0.5\"} 2\n\
             podlb_h_seconds_bucket{vrid=\"7\",le=\"+Inf\"} 3\n\
             podlb_h_seconds_sum{vrid=\"7\"} 0.25\n\
             podlb_h_seconds_count{vrid=\"7\"} 3\n\
             # HELP podlb_g_seconds Times.\n# TYPE podlb_g_seconds histogram\n\
             podlb_g_seconds_bucket{le=\"1\"} 0\n\
             podlb_g_seconds_bucket{le=\"+Inf\"} 0\n\
             podlb_g_seconds_sum 0\npodlb_g_seconds_count 0\n"
        );
    }

    #[test]
    fn kind_by_name() {
        assert_eq!(Kind::of_name("podlb_a_total"), Kind::Counter);
        assert_eq!(Kind::of_name("podlb_peers"), Kind::Gauge);
    }
}
