//! Discord: its Slack-compatible endpoint (`<webhook>/slack`) with the Slack payload.

/// The address with `/slack` appended unless it already ends with it.
pub fn url(address: &str) -> String {
    let trimmed = address.trim_end_matches('/');
    if trimmed.ends_with("/slack") {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/slack")
    }
}
