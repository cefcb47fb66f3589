//! What each part of an image costs, printed after a build and saved as JSON beside it.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct SizeReport {
    pub rows: Vec<SizeRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SizeRow {
    pub component: String,
    pub detail: String,
    pub bytes: u64,
}

impl SizeReport {
    pub fn add(&mut self, component: impl Into<String>, detail: impl Into<String>, bytes: u64) {
        self.rows.push(SizeRow {
            component: component.into(),
            detail: detail.into(),
            bytes,
        });
    }

    pub fn get(&self, component: &str) -> Option<u64> {
        self.rows
            .iter()
            .find(|r| r.component == component)
            .map(|r| r.bytes)
    }
}

pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

impl fmt::Display for SizeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .rows
            .iter()
            .map(|r| r.component.len())
            .max()
            .unwrap_or(0);
        for row in &self.rows {
            writeln!(
                f,
                "  {:<width$}  {:>10}  {}",
                row.component,
                human(row.bytes),
                row.detail
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_units() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(2048), "2.0 KiB");
        assert_eq!(human(5 * 1024 * 1024 + 512 * 1024), "5.5 MiB");
        let mut r = SizeReport::default();
        r.add("kernel", "vmlinuz", 10);
        assert!(r.to_string().contains("kernel"));
        assert_eq!(r.get("kernel"), Some(10));
    }
}
