//! Input every store can hold: DynamoDB keeps numbers with at most 38 significant digits
//! and magnitudes from 1e-130 to under 1e126 (a native number in a view item), so a command
//! carrying another number would be accepted, committed, and then never projected. Checked
//! in the core before a command is decided, so every backend refuses the same input the same
//! way (a 400 at the HTTP edge), and nothing is written.

use serde_json::Value;

/// The smallest non-zero magnitude DynamoDB stores.
pub const MIN_MAGNITUDE: f64 = 1e-130;
/// Magnitudes from this up are refused.
pub const MAX_MAGNITUDE: f64 = 1e126;
/// Significant digits DynamoDB keeps.
pub const MAX_DIGITS: usize = 38;

/// A number a store cannot hold, and where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Unstorable {
    /// A JSON path into the command, e.g. `pickup.lat`.
    pub field: String,
    pub reason: String,
}

/// Checks every number in `value` (a command, as JSON).
pub fn check(value: &Value) -> Result<(), Unstorable> {
    walk(value, "")
}

fn walk(value: &Value, at: &str) -> Result<(), Unstorable> {
    match value {
        Value::Number(n) => number(n, at),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| walk(v, &format!("{at}[{i}]"))),
        Value::Object(fields) => fields.iter().try_for_each(|(k, v)| {
            let path = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            walk(v, &path)
        }),
        _ => Ok(()),
    }
}

fn number(n: &serde_json::Number, at: &str) -> Result<(), Unstorable> {
    let refuse = |reason: String| {
        Err(Unstorable {
            field: at.to_owned(),
            reason,
        })
    };
    // Integers (i64, u64) have at most 20 digits and magnitudes far below 1e126.
    if n.is_i64() || n.is_u64() {
        return Ok(());
    }
    let Some(x) = n.as_f64() else {
        return refuse("not a number a store can hold".into());
    };
    let magnitude = x.abs();
    if !x.is_finite() || magnitude >= MAX_MAGNITUDE {
        return refuse(format!("{n} is too large (at most 1e126)"));
    }
    if magnitude != 0.0 && magnitude < MIN_MAGNITUDE {
        return refuse(format!("{n} is too small (0, or at least 1e-130)"));
    }
    // serde_json writes the shortest form that reads back to the same f64: at most 17
    // significant digits, so always within 38; counted anyway, should that ever change.
    let digits = significant_digits(&n.to_string());
    if digits > MAX_DIGITS {
        return refuse(format!("{n} has {digits} significant digits (at most 38)"));
    }
    Ok(())
}

fn significant_digits(text: &str) -> usize {
    let mantissa = text.split(['e', 'E']).next().unwrap_or(text);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    digits.trim_start_matches('0').trim_end_matches('0').len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ordinary_numbers_are_storable() {
        let command = json!({
            "pickup": { "lat": 53.3438, "lon": -6.2546 },
            "fare_cents": 9000,
            "distance_km": 0.0,
            "percent": 50,
            "list": [1.5, -2.25e10, 1e-100]
        });
        assert_eq!(check(&command), Ok(()));
    }

    #[test]
    fn numbers_outside_what_dynamodb_holds_are_refused_with_where_they_are() {
        let tiny = check(&json!({ "pickup": { "lat": 1e-200 } })).unwrap_err();
        assert_eq!(tiny.field, "pickup.lat");
        assert!(tiny.reason.contains("too small"), "{tiny}");
        let huge = check(&json!({ "distance_km": 1e200 })).unwrap_err();
        assert_eq!(huge.field, "distance_km");
        assert!(huge.reason.contains("too large"), "{huge}");
        let negative = check(&json!({ "x": [0, -1e126] })).unwrap_err();
        assert_eq!(negative.field, "x[1]");
        assert!(check(&json!({ "x": 9.99e125 })).is_ok());
        assert!(check(&json!({ "x": -1e-130 })).is_ok());
    }

    #[test]
    fn significant_digits_are_counted_without_leading_or_trailing_zeros() {
        assert_eq!(significant_digits("0.000123"), 3);
        assert_eq!(significant_digits("1.2300e5"), 3);
        assert_eq!(significant_digits("-45.6"), 3);
        assert_eq!(
            significant_digits("12345678901234567890123456789012345678901"),
            41
        );
    }
}
