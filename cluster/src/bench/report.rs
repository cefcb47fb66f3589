//! The report every bench prints: figures of a subject beside a baseline measured in the same
//! run, with the ratio subject/baseline; single figures without a baseline (e.g. memory);
//! context (what was measured, how) and notes. As an aligned text table or as JSON.

use serde_json::{Value, json};

/// How a bench prints its report (`-o table|json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

impl Format {
    /// `-o json` / `--output json` / `--output=json` among plain arguments (for the benches
    /// without clap); anything else is a table.
    pub fn from_args(args: &[String]) -> Format {
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let value = match a.as_str() {
                "-o" | "--output" => it.next().map(String::as_str),
                other => other
                    .strip_prefix("--output=")
                    .or_else(|| other.strip_prefix("-o")),
            };
            if value == Some("json") {
                return Format::Json;
            }
        }
        Format::Table
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub subject: f64,
    pub baseline: f64,
    pub unit: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Header of the first column (what the benchmark is).
    pub title: String,
    pub subject: String,
    pub baseline: String,
    pub context: Vec<(String, String)>,
    pub rows: Vec<Row>,
    pub figures: Vec<Figure>,
    pub notes: Vec<String>,
}

const NAME_WIDTH: usize = 38;
const NUMBER_WIDTH: usize = 10;

impl Comparison {
    pub fn new(title: &str, subject: &str, baseline: &str) -> Comparison {
        Comparison {
            title: title.to_string(),
            subject: subject.to_string(),
            baseline: baseline.to_string(),
            context: Vec::new(),
            rows: Vec::new(),
            figures: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn context(&mut self, key: &str, value: impl ToString) -> &mut Self {
        self.context.push((key.to_string(), value.to_string()));
        self
    }

    pub fn row(&mut self, name: impl Into<String>, subject: f64, baseline: f64, unit: &str) {
        self.rows.push(Row {
            name: name.into(),
            subject,
            baseline,
            unit: unit.to_string(),
        });
    }

    pub fn figure(&mut self, name: impl Into<String>, value: f64, unit: &str) {
        self.figures.push(Figure {
            name: name.into(),
            value,
            unit: unit.to_string(),
        });
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// `subject/baseline`, the ratio column's header.
    pub fn ratio_label(&self) -> String {
        format!("{}/{}", self.subject, self.baseline)
    }

    /// The aligned text table (context lines, header, rows, figures, notes).
    pub fn table(&self) -> String {
        let name_w = self
            .rows
            .iter()
            .map(|r| r.name.len())
            .chain(self.figures.iter().map(|f| f.name.len()))
            .chain([self.title.len(), NAME_WIDTH])
            .max()
            .unwrap_or(NAME_WIDTH);
        let unit_w = self
            .rows
            .iter()
            .map(|r| r.unit.len())
            .chain([2])
            .max()
            .unwrap_or(2);
        let col_w = NUMBER_WIDTH + unit_w;
        let ratio_w = (NUMBER_WIDTH + 4).max(self.ratio_label().len());
        let mut out = String::new();
        for (k, v) in &self.context {
            out.push_str(&format!("{k}: {v}\n"));
        }
        out.push_str(&format!(
            "{:<name_w$} {:>col_w$} {:>col_w$} {:>ratio_w$}\n",
            self.title,
            self.subject,
            self.baseline,
            self.ratio_label()
        ));
        for r in &self.rows {
            let ratio = crate::bench::stats::ratio(r.subject, r.baseline);
            out.push_str(&format!(
                "{:<name_w$} {:>NUMBER_WIDTH$.2}{:<unit_w$} {:>NUMBER_WIDTH$.2}{:<unit_w$} {:>w$.2}x\n",
                r.name,
                r.subject,
                r.unit,
                r.baseline,
                r.unit,
                ratio,
                w = ratio_w - 1
            ));
        }
        for f in &self.figures {
            out.push_str(&format!(
                "{:<name_w$} {:>NUMBER_WIDTH$.2}{}\n",
                f.name, f.value, f.unit
            ));
        }
        for n in &self.notes {
            out.push_str(n);
            out.push('\n');
        }
        out
    }

    pub fn json(&self) -> Value {
        let context: serde_json::Map<String, Value> = self
            .context
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        json!({
            "benchmark": self.title,
            "subject": self.subject,
            "baseline": self.baseline,
            "context": context,
            "rows": self.rows.iter().map(|r| json!({
                "name": r.name,
                "unit": r.unit,
                "subject": r.subject,
                "baseline": r.baseline,
                "ratio": crate::bench::stats::ratio(r.subject, r.baseline),
            })).collect::<Vec<_>>(),
            "figures": self.figures.iter().map(|f| json!({
                "name": f.name, "unit": f.unit, "value": f.value,
            })).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }

    /// Prints the report on stdout in `format`.
    pub fn print(&self, format: Format) {
        match format {
            Format::Table => print!("{}", self.table()),
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(&self.json()).expect("a report serialises")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Comparison {
        let mut c = Comparison::new("benchmark", "sqlite", "etcd");
        c.context("pods", 100);
        c.row("creates/s, 1 writers", 300.0, 150.0, "/s");
        c.row("create p50, 1 writers", 1.0, 0.0, "ms");
        c.figure("agent RSS", 42.5, "MiB");
        c.note("(lower is better)");
        c
    }

    #[test]
    fn table_aligns_rows_and_shows_ratios() {
        let t = sample().table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "pods: 100");
        assert_eq!(
            lines[1],
            format!(
                "{:<38} {:>12} {:>12} {:>14}",
                "benchmark", "sqlite", "etcd", "sqlite/etcd"
            )
        );
        assert_eq!(
            lines[2],
            format!(
                "{:<38} {:>10.2}{:<2} {:>10.2}{:<2} {:>13.2}x",
                "creates/s, 1 writers", 300.0, "/s", 150.0, "/s", 2.0
            )
        );
        assert!(lines[3].trim_end().ends_with("NaNx"), "{}", lines[3]);
        assert_eq!(lines[4], format!("{:<38} {:>10.2}MiB", "agent RSS", 42.5));
        assert_eq!(lines[5], "(lower is better)");
    }

    #[test]
    fn json_carries_ratios_and_figures() {
        let j = sample().json();
        assert_eq!(j["rows"][0]["ratio"], 2.0);
        assert_eq!(j["rows"][1]["ratio"], Value::Null, "NaN becomes null");
        assert_eq!(j["figures"][0]["value"], 42.5);
        assert_eq!(j["context"]["pods"], "100");
        assert_eq!(j["subject"], "sqlite");
    }

    #[test]
    fn output_format_from_plain_args() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            Format::from_args(&args(&["--quick", "-o", "json"])),
            Format::Json
        );
        assert_eq!(Format::from_args(&args(&["--output=json"])), Format::Json);
        assert_eq!(Format::from_args(&args(&["-ojson"])), Format::Json);
        assert_eq!(Format::from_args(&args(&["-o", "table"])), Format::Table);
        assert_eq!(Format::from_args(&args(&[])), Format::Table);
    }
}
