//! Wall-clock formatting shared by resources, events and the API.

/// Now, as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Nanoseconds since the Unix epoch as RFC 3339 UTC with nanoseconds (for clocks that are not
/// the host's, as the dev system's simulated one).
pub fn rfc3339_from_nanos(nanos: i128) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
