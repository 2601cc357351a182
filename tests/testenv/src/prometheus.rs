//! Prometheus reads the Prometheus text exposition format, as the gateway, the collector's
//! Prometheus exporter, Alertmanager and the API server serve it on `/metrics`.

use std::collections::BTreeMap;

/// Sample is one sample line: a metric name, its labels and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// label is the value of label `name`, empty when the sample has none.
    #[must_use]
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }

    /// has says whether the sample's labels include every pair of `with`.
    #[must_use]
    pub fn has(&self, with: &[(&str, &str)]) -> bool {
        with.iter()
            .all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }

    /// request names an `apiserver_request_total` or `apiserver_request_duration_seconds`
    /// sample "VERB resource[/subresource]" ("VERB (non-resource)" for a path).
    #[must_use]
    pub fn request(&self) -> String {
        let verb = self.label("verb");
        match (self.label("resource"), self.label("subresource")) {
            ("", "") => format!("{verb} (non-resource)"),
            ("", s) => format!("{verb} {s}"),
            (r, "") => format!("{verb} {r}"),
            (r, s) => format!("{verb} {r}/{s}"),
        }
    }
}

/// parse reads the samples of an exposition; comments, blank lines and lines it cannot
/// read are skipped, and a value that is not a number is NaN.
#[must_use]
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(sample)
        .collect()
}

/// sum adds the samples of `name` whose labels include `with` (0 when there is none).
#[must_use]
pub fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    value(samples, name, with).unwrap_or(0.0)
}

/// value adds the samples of `name` whose labels include `with`; None when there is none.
#[must_use]
pub fn value(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == name && s.has(with))
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// apiserver scrapes the API server's `/metrics` through `client`.
///
/// # Errors
///
/// When the API server does not answer the scrape.
pub async fn apiserver(client: &kube::Client) -> Result<Vec<Sample>, kube::Error> {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .map_err(kube::Error::HttpError)?;
    Ok(parse(&client.request_text(req).await?))
}

/// sample reads one line: `name{k="v",...} value [timestamp]`.
fn sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start_matches([',', ' ']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = rest.split_once("=\"")?;
            let (value, after) = quoted(after)?;
            labels.insert(key.trim().to_owned(), value);
            rest = after;
        }
    }
    let value = rest.split_whitespace().next()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value: value.parse().unwrap_or(f64::NAN),
    })
}

/// quoted reads a label value up to its closing quote, undoing the format's escapes, and
/// returns it with the rest of the line.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_keep_their_labels_and_values() {
        let samples = parse(
            "# HELP x_total x\n\
             # TYPE x_total counter\n\
             x_total{code=\"200\",path=\"a,b\\\"c\"} 3\n\
             x_total{code=\"500\"} 1.5 1700000000000\n\
             up 1\n\
             \n",
        );
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].label("path"), "a,b\"c");
        assert_eq!(sum(&samples, "x_total", &[]), 4.5);
        assert_eq!(sum(&samples, "x_total", &[("code", "500")]), 1.5);
        assert_eq!(value(&samples, "up", &[]), Some(1.0));
        assert_eq!(value(&samples, "down", &[]), None);
    }

    #[test]
    fn a_request_sample_is_named_by_verb_and_resource() {
        let samples = parse(
            "apiserver_request_total{resource=\"leases\",verb=\"GET\"} 1\n\
             apiserver_request_total{resource=\"remediationrequests\",subresource=\"status\",verb=\"PATCH\"} 1\n\
             apiserver_request_total{verb=\"GET\"} 1\n",
        );
        let names: Vec<String> = samples.iter().map(Sample::request).collect();
        assert_eq!(
            names,
            [
                "GET leases",
                "PATCH remediationrequests/status",
                "GET (non-resource)"
            ]
        );
    }
}
