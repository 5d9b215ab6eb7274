//! A Prometheus / OpenMetrics text parser for tests: the process tests read each process's
//! `/metrics` with it. Compiled only for tests (`test-util` feature for other crates), so no
//! product binary carries it.

/// One sample line of a text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name as written, suffix included (`_total`, `_bucket`, `_count`, ...).
    pub name: String,
    /// Labels in the order written, values unescaped.
    pub labels: Vec<(String, String)>,
    /// The value; may be infinite or NaN.
    pub value: f64,
}

/// Metric types a `# TYPE` line may name (Prometheus and OpenMetrics together).
const METRIC_TYPES: [&str; 9] =
    ["counter", "gauge", "histogram", "summary", "untyped", "unknown", "info", "stateset", "gaugehistogram"];

/// Parses a Prometheus / OpenMetrics text exposition and returns every sample in order.
///
/// Accepts `# HELP`, `# TYPE`, `# UNIT` and `# EOF` lines, empty lines, and sample lines
/// `name{label="value",...} value [timestamp]` whose label values may contain the escapes
/// `\"`, `\\` and `\n`. Anything else, including other comments, exemplars and any line after
/// `# EOF`, is rejected with an error naming the (1-based) line number.
pub fn parse_text(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    let mut eof_line = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let fail = |reason: String| format!("line {number}: {reason}: {line:?}");
        if let Some(eof) = eof_line {
            return Err(fail(format!("content after `# EOF` on line {eof}")));
        }
        if line.is_empty() {
            continue;
        }
        if line.starts_with('#') {
            if line == "# EOF" {
                eof_line = Some(number);
            } else {
                parse_descriptor(line).map_err(fail)?;
            }
            continue;
        }
        samples.push(parse_sample(line).map_err(fail)?);
    }
    Ok(samples)
}

/// Sum of the values of the samples named `name` whose labels include every pair of `labels`.
pub fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| labels.iter().all(|&(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v)))
        .map(|s| s.value)
        .sum()
}

fn parse_descriptor(line: &str) -> Result<(), String> {
    let rest = line.strip_prefix("# ").ok_or("comment is not `# HELP`, `# TYPE`, `# UNIT` or `# EOF`")?;
    let (keyword, rest) = rest.split_once(' ').ok_or("descriptor without a metric name")?;
    let (name, arg) = rest.split_once(' ').unwrap_or((rest, ""));
    match keyword {
        "HELP" | "TYPE" | "UNIT" => {}
        _ => return Err(format!("unknown comment `# {keyword}`")),
    }
    if !is_metric_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    match keyword {
        "TYPE" if !METRIC_TYPES.contains(&arg) => Err(format!("unknown metric type {arg:?}")),
        "UNIT" if !arg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => Err(format!("invalid unit {arg:?}")),
        // Help text is free-form; its escapes do not affect where the line ends.
        _ => Ok(()),
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_len = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(line.len());
    let name = &line[..name_len];
    if !is_metric_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[name_len..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = parse_labels(after_brace, &mut labels)?;
    }
    let fields: Vec<&str> = rest.split([' ', '\t']).filter(|f| !f.is_empty()).collect();
    if !rest.starts_with([' ', '\t']) || fields.is_empty() {
        return Err("expected whitespace and a value after the metric name and labels".to_string());
    }
    if fields.len() > 2 {
        return Err(format!("unexpected {:?} after value and timestamp", fields[2..].join(" ")));
    }
    let value = parse_value(fields[0]).ok_or_else(|| format!("invalid value {:?}", fields[0]))?;
    if let Some(ts) = fields.get(1) {
        match ts.parse::<f64>() {
            Ok(t) if t.is_finite() => {}
            _ => return Err(format!("invalid timestamp {ts:?}")),
        }
    }
    Ok(Sample { name: name.to_string(), labels, value })
}

/// Parses `l="v",...}` (the opening brace already consumed) into `labels`; returns what follows
/// the closing brace.
fn parse_labels<'a>(mut rest: &'a str, labels: &mut Vec<(String, String)>) -> Result<&'a str, String> {
    loop {
        // An empty set `{}` and a trailing comma are both valid in the Prometheus format.
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let key_len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        let key = &rest[..key_len];
        if !is_label_name(key) {
            return Err(format!("invalid label name {key:?}"));
        }
        if labels.iter().any(|(k, _)| k == key) {
            return Err(format!("duplicate label {key:?}"));
        }
        rest = rest[key_len..].strip_prefix("=\"").ok_or_else(|| format!("expected `=\"` after label {key:?}"))?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let closed_at = loop {
            match chars.next() {
                None => return Err(format!("unterminated value of label {key:?}")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '"')) => value.push('"'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, 'n')) => value.push('\n'),
                    other => {
                        let what = other.map_or("end of line".to_string(), |(_, c)| format!("{c:?}"));
                        return Err(format!("invalid escape before {what} in label {key:?}"));
                    }
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        rest = &rest[closed_at + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(format!("expected `,` or `}}` after label {key:?}"));
        }
    }
}

/// A sample value: a decimal number, or `+Inf`, `-Inf`, `Inf`, `NaN` as Prometheus writes them.
pub(crate) fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => return Some(f64::INFINITY),
        "-Inf" => return Some(f64::NEG_INFINITY),
        "NaN" => return Some(f64::NAN),
        _ => {}
    }
    // Rust also reads spellings such as "inf" and "infinity"; only the canonical ones above
    // are valid exposition, so anything with a letter other than an exponent is refused.
    if s.chars().any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E') {
        return None;
    }
    s.parse().ok()
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
