//! Query-string parameters: which ones each route takes, and their checks. Every rejection
//! is a 400 problem (`invalid_query`, or `invalid_cursor` for a cursor that cannot be one)
//! and happens before the read models are read.

use std::collections::BTreeMap;
use timeline_core::ports::{Lookup, LookupKind, PageRequest};
use timeline_core::registry::Kind;
use timeline_core::Timestamp;
use timeline_http::Problem;

pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;
/// Lookup values (rider and driver ids) are at most this long, as the command side allows.
pub const MAX_VALUE_CHARS: usize = 128;
/// Cursors this API issues are far shorter; anything longer is not one of them.
pub const MAX_CURSOR_CHARS: usize = 2048;

const LIMIT: &str = "limit";
const CURSOR: &str = "cursor";
const STATUS: &str = "status";
const FROM: &str = "from";
const TO: &str = "to";

fn invalid(detail: impl Into<String>) -> Problem {
    Problem::bad_request("invalid_query", detail)
}

/// The parameters as given, each at most once and each one the route knows.
fn collect<'q>(
    pairs: impl IntoIterator<Item = (&'q str, &'q str)>,
    allowed: &[&str],
) -> Result<BTreeMap<&'q str, &'q str>, Problem> {
    let mut seen = BTreeMap::new();
    let mut unknown = Vec::new();
    for (name, value) in pairs {
        if !allowed.contains(&name) {
            if !unknown.contains(&name) {
                unknown.push(name);
            }
            continue;
        }
        if seen.insert(name, value).is_some() {
            return Err(
                invalid(format!("the parameter {name} is given more than once"))
                    .with("parameter", name),
            );
        }
    }
    if unknown.is_empty() {
        return Ok(seen);
    }
    unknown.sort_unstable();
    let expected = if allowed.is_empty() {
        "this route takes no query parameters".to_owned()
    } else {
        format!("this route takes {}", allowed.join(", "))
    };
    Err(invalid(format!(
        "unknown query parameter(s) {}: {expected}",
        unknown.join(", ")
    ))
    .with("unknown_parameters", unknown))
}

fn page(params: &BTreeMap<&str, &str>) -> Result<PageRequest, Problem> {
    let limit = match params.get(LIMIT) {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                invalid(format!(
                    "limit must be an integer from 1 to {MAX_LIMIT}, got {raw:?}"
                ))
                .with("parameter", LIMIT)
            })?,
    };
    let cursor = match params.get(CURSOR) {
        None => None,
        Some(c) if c.is_empty() || c.len() > MAX_CURSOR_CHARS => return Err(invalid_cursor()),
        Some(c) => Some((*c).to_owned()),
    };
    Ok(PageRequest { limit, cursor })
}

/// The problem for a cursor this API did not issue (or issued for another query).
pub fn invalid_cursor() -> Problem {
    Problem::bad_request(
        "invalid_cursor",
        "the cursor is not one this API issued; pass next_cursor from the previous page unchanged, with the same filters",
    )
    .with("parameter", CURSOR)
}

/// A route that takes no parameters (the current view).
pub fn none<'q>(pairs: impl IntoIterator<Item = (&'q str, &'q str)>) -> Result<(), Problem> {
    collect(pairs, &[]).map(|_| ())
}

/// `?rider_id=` / `?driver_id=` / `?status=` (exactly one) with `limit` and `cursor`.
pub fn list<'q>(
    kind: &Kind,
    pairs: impl IntoIterator<Item = (&'q str, &'q str)>,
) -> Result<(Lookup, PageRequest), Problem> {
    let filters: Vec<&str> = kind
        .filters
        .iter()
        .map(|(name, _)| *name)
        .chain([STATUS])
        .collect();
    let mut allowed = filters.clone();
    allowed.extend([LIMIT, CURSOR]);
    let params = collect(pairs, &allowed)?;
    let given: Vec<&str> = filters
        .iter()
        .copied()
        .filter(|f| params.contains_key(f))
        .collect();
    let [filter] = given[..] else {
        let detail = if given.is_empty() {
            format!("filter by exactly one of {}", filters.join(", "))
        } else {
            format!(
                "filter by exactly one of {}, got {}",
                filters.join(", "),
                given.join(" and ")
            )
        };
        return Err(invalid(detail).with("filters", filters));
    };
    let value = params[filter];
    let lookup_kind = if filter == STATUS {
        if !kind.statuses.contains(&value) {
            return Err(invalid(format!(
                "unknown status {value:?}: one of {}",
                kind.statuses.join(", ")
            ))
            .with("parameter", STATUS)
            .with("statuses", kind.statuses));
        }
        LookupKind::Status
    } else {
        if value.trim().is_empty() || value.chars().count() > MAX_VALUE_CHARS {
            return Err(invalid(format!(
                "{filter} must be 1 to {MAX_VALUE_CHARS} characters, not blank"
            ))
            .with("parameter", filter));
        }
        kind.filters
            .iter()
            .find(|(name, _)| *name == filter)
            .map(|(_, kind)| *kind)
            .expect("filters come from the lookups")
    };
    let lookup = Lookup {
        aggregate_type: kind.aggregate_type.to_owned(),
        kind: lookup_kind,
        value: value.to_owned(),
    };
    Ok((lookup, page(&params)?))
}

/// The inclusive time range of a history query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Range {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

fn timestamp(params: &BTreeMap<&str, &str>, name: &str) -> Result<Option<Timestamp>, Problem> {
    params
        .get(name)
        .map(|raw| {
            raw.parse::<Timestamp>().map_err(|_| {
                invalid(format!(
                    "{name} must be an RFC 3339 timestamp (e.g. 2025-11-28T10:00:00Z), got {raw:?}"
                ))
                .with("parameter", name)
            })
        })
        .transpose()
}

/// `?from=&to=` (RFC 3339, both optional, inclusive) with `limit` and `cursor`.
pub fn history<'q>(
    pairs: impl IntoIterator<Item = (&'q str, &'q str)>,
) -> Result<(Range, PageRequest), Problem> {
    let params = collect(pairs, &[FROM, TO, LIMIT, CURSOR])?;
    let range = Range {
        from: timestamp(&params, FROM)?,
        to: timestamp(&params, TO)?,
    };
    if let (Some(from), Some(to)) = (range.from, range.to) {
        if from > to {
            return Err(invalid(format!("from ({from}) is after to ({to})")));
        }
    }
    Ok((range, page(&params)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ride() -> &'static Kind {
        timeline_core::registry::kind("ride").unwrap()
    }

    fn video() -> &'static Kind {
        timeline_core::registry::kind("video").unwrap()
    }

    fn code<T: std::fmt::Debug>(r: Result<T, Problem>) -> String {
        r.expect_err("refused").code
    }

    #[test]
    fn a_list_takes_exactly_one_filter() {
        let (lookup, page) = list(ride(), [("rider_id", "r-1")]).unwrap();
        assert_eq!(lookup.kind, LookupKind::Rider);
        assert_eq!(
            (lookup.aggregate_type.as_str(), lookup.value.as_str()),
            ("ride", "r-1")
        );
        assert_eq!(
            page,
            PageRequest {
                limit: DEFAULT_LIMIT,
                cursor: None
            }
        );
        let (lookup, _) = list(video(), [("status", "processing")]).unwrap();
        assert_eq!(
            (lookup.kind, lookup.aggregate_type.as_str()),
            (LookupKind::Status, "video")
        );
        assert_eq!(code(list(ride(), [])), "invalid_query");
        assert_eq!(
            code(list(ride(), [("rider_id", "a"), ("status", "booked")])),
            "invalid_query"
        );
        assert_eq!(
            code(list(ride(), [("rider_id", "a"), ("rider_id", "b")])),
            "invalid_query"
        );
        assert_eq!(code(list(video(), [("rider_id", "a")])), "invalid_query");
        assert_eq!(code(list(ride(), [("rider_id", " ")])), "invalid_query");
        assert_eq!(
            code(list(ride(), [("status", "processing")])),
            "invalid_query"
        );
        assert_eq!(
            code(list(video(), [("status", "processing:50%")])),
            "invalid_query"
        );
    }

    #[test]
    fn limits_and_cursors_are_checked() {
        for limit in ["0", "101", "-1", "ten", "", "2.5"] {
            let r = list(ride(), [("status", "booked"), ("limit", limit)]);
            assert_eq!(code(r), "invalid_query", "limit {limit:?}");
        }
        let (_, page) = list(
            ride(),
            [("status", "booked"), ("limit", "100"), ("cursor", "abc")],
        )
        .unwrap();
        assert_eq!(
            page,
            PageRequest {
                limit: 100,
                cursor: Some("abc".into())
            }
        );
        assert_eq!(
            code(list(ride(), [("status", "booked"), ("cursor", "")])),
            "invalid_cursor"
        );
        let long = "a".repeat(MAX_CURSOR_CHARS + 1);
        assert_eq!(code(history([("cursor", long.as_str())])), "invalid_cursor");
    }

    #[test]
    fn history_ranges_are_rfc3339_and_ordered() {
        let (range, _) = history([
            ("from", "2025-11-28T11:01:30+01:00"),
            ("to", "2025-11-28T10:02:30Z"),
        ])
        .unwrap();
        assert_eq!(range.from.unwrap().to_string(), "2025-11-28T10:01:30.000Z");
        assert_eq!(history([]).unwrap().0, Range::default());
        assert_eq!(code(history([("from", "yesterday")])), "invalid_query");
        assert_eq!(
            code(history([
                ("from", "2025-11-28T10:03:00Z"),
                ("to", "2025-11-28T10:02:00Z")
            ])),
            "invalid_query"
        );
        assert!(history([
            ("from", "2025-11-28T10:03:00Z"),
            ("to", "2025-11-28T10:03:00Z")
        ])
        .is_ok());
        assert_eq!(code(history([("status", "booked")])), "invalid_query");
    }

    #[test]
    fn a_view_takes_no_parameters() {
        assert!(none([]).is_ok());
        let problem = none([("b", "1"), ("a", "2")]).unwrap_err();
        assert_eq!(
            problem.extensions["unknown_parameters"],
            serde_json::json!(["a", "b"])
        );
    }
}
