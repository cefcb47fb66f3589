//! The one timestamp every output file carries, so builds are reproducible.

use anyhow::{Context, Result};

/// Used when SOURCE_DATE_EPOCH is not set: 2024-01-01T00:00:00Z.
pub const DEFAULT_SOURCE_DATE_EPOCH: u64 = 1_704_067_200;

/// SOURCE_DATE_EPOCH (https://reproducible-builds.org/specs/source-date-epoch/) or the default.
pub fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) if !value.trim().is_empty() => value.trim().parse().with_context(|| {
            format!("SOURCE_DATE_EPOCH={value:?} is not a whole number of seconds")
        }),
        _ => Ok(DEFAULT_SOURCE_DATE_EPOCH),
    }
}
