//! Limits on what a route or an amount may hold, the same whether it comes from the configuration file
//! (`<default-routes>`) or from a service's answer: the parser checks them here, and the services' wire
//! contract checks answers against them.

use compact_str::CompactString;

use rtc_money::Money;

/// Largest amount of money accepted in an answer or a route: one million units (prices, reservations, costs).
pub const MAX_MONEY: Money = Money(1_000_000 * Money::MICROS_PER_UNIT);
/// Most routes accepted in a routing answer or in `<default-routes>`.
pub const MAX_ROUTES: usize = 16;
/// Longest partner or carrier name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest dial string, in bytes.
pub const MAX_DIAL_STRING_LEN: usize = 1024;

/// A name or label: 1..=max bytes, no control characters. The error says which `field` and why.
pub fn check_text(field: &str, text: &str, max: usize) -> Result<CompactString, String> {
    if text.is_empty() || text.len() > max {
        return Err(format!(
            "{field}: length {} is outside 1..={max} bytes",
            text.len()
        ));
    }
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(format!("{field}: contains control character {c:?}"));
    }
    Ok(CompactString::from(text))
}

/// Checks a dial string: FreeSWITCH must get exactly one bridge target per route. The error says which
/// `field` and why.
pub fn check_dial_string(field: &str, dial: &str) -> Result<CompactString, String> {
    let dial = check_text(field, dial, MAX_DIAL_STRING_LEN)?;
    if dial.contains('|') {
        return Err(format!(
            "{field}: contains '|' (failover between routes is the engine's; send one route per entry)"
        ));
    }
    Ok(dial)
}
