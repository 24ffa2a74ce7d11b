//! Reading the Prometheus text exposition the agent serves on `/metrics`.

use anyhow::{bail, Context};

/// The sum of every sample of the metric `name` in `text`: an unlabelled
/// metric's one sample, or a labelled metric's samples over all its label
/// sets. `None` when `text` holds no sample of `name`; a value that is not
/// a number, or labels left open, is an error quoting the line.
pub fn sum(text: &str, name: &str) -> anyhow::Result<Option<f64>> {
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if let Some(labels) = rest.strip_prefix('{') {
            let Some(end) = end_of_labels(labels) else {
                bail!("labels left open in {line:?}");
            };
            &labels[end..]
        } else if rest.is_empty() || rest.starts_with([' ', '\t']) {
            rest
        } else {
            // Another metric whose name starts with `name`.
            continue;
        };
        let value: f64 = value
            .split_whitespace()
            .next()
            .and_then(|value| value.parse().ok())
            .with_context(|| format!("no number after the name in {line:?}"))?;
        *total.get_or_insert(0.0) += value;
    }
    Ok(total)
}

/// Where a label set ends, just past its `}` (`labels` starts after the
/// `{`): a quoted label value may hold `}`, spaces and escaped quotes.
fn end_of_labels(labels: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i + 1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::sum;

    const TEXT: &str = r#"# HELP tollgate_reads Reads.
# TYPE tollgate_reads counter
tollgate_reads 3
tollgate_reads_failed 7
tollgate_bytes_total{workload="api",category="cross_zone"} 100
tollgate_bytes_total{workload="odd } \" name",category="internet"} 20.5
tollgate_bytes_total_created{workload="api"} 1700000000
"#;

    #[test]
    fn an_unlabelled_sample_is_read_and_a_longer_name_is_not_it() {
        assert_eq!(sum(TEXT, "tollgate_reads").unwrap(), Some(3.0));
    }

    #[test]
    fn labelled_samples_are_summed_whatever_their_values_hold() {
        assert_eq!(sum(TEXT, "tollgate_bytes_total").unwrap(), Some(120.5));
    }

    #[test]
    fn an_absent_metric_is_none_and_a_broken_line_an_error() {
        assert_eq!(sum(TEXT, "tollgate_missing").unwrap(), None);
        let error = sum("tollgate_reads many\n", "tollgate_reads").unwrap_err();
        assert!(error.to_string().contains("tollgate_reads many"), "{error}");
        assert!(sum("tollgate_reads\n", "tollgate_reads").is_err());
        assert_eq!(
            sum("tollgate_reads\t4\n", "tollgate_reads").unwrap(),
            Some(4.0)
        );
        let error = sum("tollgate_reads{a=\"}\n", "tollgate_reads").unwrap_err();
        assert!(error.to_string().contains("left open"), "{error}");
    }
}
