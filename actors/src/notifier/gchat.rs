//! Google Chat incoming webhook: one card, the message then one section per field.

use serde_json::{Value, json};

use super::ChatMessage;

fn paragraph(text: String) -> Value {
    json!({"widgets": [{"textParagraph": {"text": text}}]})
}

pub fn payload(msg: &ChatMessage<'_>) -> Value {
    let mut sections = vec![paragraph(format!(
        "<font color=#848484><strong>{}</strong></font>",
        msg.text
    ))];
    sections.extend(msg.fields.iter().map(|(name, value)| {
        paragraph(format!(
            "{name}<br><font color=#848484><strong>{value}</strong></font>"
        ))
    }));
    json!({
        "cards": [{
            "header": {
                "title": "Flagger",
                "subtitle": msg.canary.to_string(),
                "imageUrl": "https://flagger.app/favicon.png",
            },
            "sections": sections,
        }],
    })
}
