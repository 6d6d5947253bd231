//! Human-readable rendering of responses: the proto3 JSON form as an indented outline.

use serde_json::Value;

/// Renders a JSON value as `key: value` lines, nested values indented.
pub fn outline(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, 0);
    if out.is_empty() {
        out.push_str("(empty response)\n");
    }
    out
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some("-".into()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Array(items) if items.is_empty() => Some("(none)".into()),
        Value::Object(map) if map.is_empty() => Some("(empty)".into()),
        _ => None,
    }
}

fn write_value(out: &mut String, value: &Value, depth: usize) {
    let pad = "  ".repeat(depth);
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match scalar(item) {
                    Some(text) => out.push_str(&format!("{pad}{key}: {text}\n")),
                    None => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        write_value(out, item, depth + 1);
                    }
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                match scalar(item) {
                    Some(text) => out.push_str(&format!("{pad}- {text}\n")),
                    None => {
                        out.push_str(&format!("{pad}[{index}]\n"));
                        write_value(out, item, depth + 1);
                    }
                }
            }
        }
        other => {
            if let Some(text) = scalar(other) {
                out.push_str(&format!("{pad}{text}\n"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outlines_nested_values() {
        let value = serde_json::json!({"accepted": "3", "rejections": [{"record_index": "1", "field": "sex"}], "empty": []});
        assert_eq!(
            outline(&value),
            "accepted: 3\nrejections:\n  [0]\n    record_index: 1\n    field: sex\nempty: (none)\n"
        );
        assert_eq!(outline(&serde_json::json!({})), "(empty response)\n");
    }
}
