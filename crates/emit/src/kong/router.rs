//! Kong 3.9's HTTP router, as far as the generated config needs it: how routes are ranked
//! (`router_flavor = traditional_compatible`, the 3.9 default) and which routes of a config
//! can take requests meant for another ([`shadowing`]).
//!
//! Facts (kong@3.9.3 `kong/router/transform.lua`): a route with paths of different prefix
//! lengths is split into one route per length, all its regex paths forming one more
//! (`split_routes_and_services_by_path`). Each is ranked by a 64-bit priority
//! (`get_priority`): bits 61..63 count the fields it matches on (sources, destinations,
//! methods, hosts, headers, snis, paths), bit 60 plain hosts only, bits 52..59 the number of
//! headers, bit 51 a regex path, bits 19..50 `regex_priority` (regex paths only), bits 0..18
//! the prefix length. The highest priority among the matching routes wins; on equal priority
//! the ATC router orders by route id, which DB-less configs without ids make arbitrary. So
//! methods and headers count before path length: a route `GET /v1` outranks `/v1/stacks`
//! for `GET /v1/stacks`.
//!
//! Paths are prefixes (`^=`) or, with a leading `~`, regexes anchored at the start. The
//! emitter writes every spec path `P` as the regex `~P(?:/|$)` (whole segments: `/v1/admin`
//! never matches `/v1/administrator`) with `regex_priority` = the longest path's length, so
//! that among our routes a deeper path still wins. This module understands those segment
//! regexes and plain prefixes exactly; any other regex is assumed to overlap everything.

use serde_json::Value;

/// One route as Kong's router ranks it (after splitting by path kind and length).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ranked {
    /// The route's name.
    pub name: String,
    /// Its paths of this split.
    pub paths: Vec<Path>,
    /// Methods; empty means all.
    pub methods: Vec<String>,
    /// Header name (lower case) → accepted values (lower case).
    pub headers: Vec<(String, Vec<String>)>,
    /// Kong's priority.
    pub priority: u64,
}

/// A route path as the router matches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Path {
    /// A plain prefix: matches every path starting with it.
    Prefix(String),
    /// `~P(?:/|$)`: `P` itself or anything below it.
    Segment(String),
    /// Any other regex.
    Regex(String),
}

/// The suffix of a whole-segment regex path.
pub const SEGMENT_SUFFIX: &str = "(?:/|$)";

impl Path {
    /// Parses a path of a route as written in the config.
    pub fn parse(p: &str) -> Path {
        let Some(regex) = p.strip_prefix('~') else {
            return Path::Prefix(p.to_string());
        };
        match regex.strip_suffix(SEGMENT_SUFFIX) {
            Some(base) if !base.is_empty() && is_escaped_literal(base) => {
                Path::Segment(base.replace("\\.", "."))
            }
            _ => Path::Regex(regex.to_string()),
        }
    }

    /// The regex path the emitter writes for the spec path `p`: whole segments only.
    pub fn segment_regex(p: &str) -> String {
        format!("~{}{SEGMENT_SUFFIX}", p.replace('.', "\\."))
    }

    fn is_regex(&self) -> bool {
        !matches!(self, Path::Prefix(_))
    }

    /// Some path both match, if any can be shown (`None` when they are disjoint).
    fn overlap(&self, other: &Path) -> Option<String> {
        use Path::{Prefix, Regex, Segment};
        let below = |deep: &str, top: &str| deep == top || deep.starts_with(&format!("{top}/"));
        match (self, other) {
            (Segment(a), Segment(b)) => {
                if below(a, b) {
                    Some(a.clone())
                } else if below(b, a) {
                    Some(b.clone())
                } else {
                    None
                }
            }
            (Prefix(a), Prefix(b)) => {
                if a.starts_with(b.as_str()) {
                    Some(a.clone())
                } else if b.starts_with(a.as_str()) {
                    Some(b.clone())
                } else {
                    None
                }
            }
            (Prefix(p), Segment(s)) | (Segment(s), Prefix(p)) => {
                if s.starts_with(p.as_str()) {
                    Some(s.clone())
                } else if below(p, s) || p.starts_with(&format!("{s}/")) {
                    Some(p.clone())
                } else if format!("{s}/").starts_with(p.as_str()) {
                    Some(format!("{s}/"))
                } else {
                    None
                }
            }
            (Regex(r), _) | (_, Regex(r)) => Some(format!("~{r}")),
        }
    }

    /// Whether every path this matches, `other` matches too.
    fn within(&self, other: &Path) -> bool {
        use Path::{Prefix, Regex, Segment};
        match (self, other) {
            (Segment(a), Segment(b)) => a == b || a.starts_with(&format!("{b}/")),
            (Segment(a), Prefix(b)) => a.starts_with(b.as_str()),
            (Prefix(a), Prefix(b)) => a.starts_with(b.as_str()),
            (Prefix(a), Segment(b)) => a.starts_with(&format!("{b}/")),
            (Regex(a), Regex(b)) => a == b,
            _ => false,
        }
    }
}

/// Whether `s` is a path with only `.` escaped (what [`Path::segment_regex`] writes).
fn is_escaped_literal(s: &str) -> bool {
    let mut bytes = s.bytes().peekable();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' if bytes.next() != Some(b'.') => return false,
            b'\\' => {}
            b'.' | b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'*' | b'+' | b'?' | b'|' | b'^'
            | b'$' => return false,
            _ => {}
        }
    }
    true
}

/// Kong's priority of one (split) route (`get_priority`, http routes).
pub fn priority(route: &Value, paths: &[Path]) -> u64 {
    let has = |field: &str| match route.get(field) {
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        _ => false,
    };
    let mut weight: u64 = [
        "sources",
        "destinations",
        "methods",
        "hosts",
        "headers",
        "snis",
    ]
    .iter()
    .filter(|f| has(f))
    .count() as u64;
    let headers = route
        .get("headers")
        .and_then(Value::as_object)
        .map_or(0, |h| h.len().min(255) as u64);
    let hosts = route.get("hosts").and_then(Value::as_array);
    let plain_hosts =
        hosts.is_some_and(|h| h.iter().all(|x| !x.as_str().unwrap_or("").contains('*')));
    let mut regex = false;
    let mut length = 0u64;
    if let Some(first) = paths.first() {
        weight += 1;
        regex = first.is_regex();
        if let Path::Prefix(p) = first {
            length = p.len() as u64;
        }
    }
    let regex_priority = if regex {
        route
            .get("regex_priority")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            & 0xFFFF_FFFF
    } else {
        0
    };
    (weight.min(7) << 61)
        | (u64::from(plain_hosts) << 60)
        | (headers << 52)
        | (u64::from(regex) << 51)
        | (regex_priority << 19)
        | (length & 0x7FFFF)
}

/// Every route of a config document (service routes and service-less ones), split and ranked
/// as Kong's router does.
pub fn ranked(doc: &Value) -> Vec<Ranked> {
    let services = doc
        .get("services")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|s| {
            s.get("routes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        });
    let top = doc
        .get("routes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    services.chain(top).flat_map(split).collect()
}

fn split(route: &Value) -> Vec<Ranked> {
    let name = route["name"].as_str().unwrap_or("?").to_string();
    let methods: Vec<String> = strings(route.get("methods"));
    let headers: Vec<(String, Vec<String>)> = route
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    let vals = strings(Some(v))
                        .iter()
                        .map(|x| x.to_ascii_lowercase())
                        .collect();
                    (k.to_ascii_lowercase(), vals)
                })
                .collect()
        })
        .unwrap_or_default();
    let paths: Vec<Path> = strings(route.get("paths"))
        .iter()
        .map(|p| Path::parse(p))
        .collect();
    // Kong's groups: all regexes together, plain prefixes by length.
    let mut groups: Vec<Vec<Path>> = Vec::new();
    for p in paths {
        let key = |q: &Path| match q {
            Path::Prefix(s) => Some(s.len()),
            _ => None,
        };
        match groups
            .iter_mut()
            .find(|g| g.first().map(key) == Some(key(&p)))
        {
            Some(g) => g.push(p),
            None => groups.push(vec![p]),
        }
    }
    if groups.is_empty() {
        groups.push(Vec::new());
    }
    groups
        .into_iter()
        .map(|paths| Ranked {
            priority: priority(route, &paths),
            name: name.clone(),
            paths,
            methods: methods.clone(),
            headers: headers.clone(),
        })
        .collect()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Two routes that Kong may confuse: a request both match (`example`) goes to `winner` although
/// `loser` is at least as specific for it, or to either (equal priority).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shadow {
    /// The route Kong picks (either one, when `tie`).
    pub winner: String,
    /// The route that does not get the request.
    pub loser: String,
    /// A request both match, e.g. `GET /v1/stacks`.
    pub example: String,
    /// Equal priorities: Kong's choice depends on route ids.
    pub tie: bool,
}

impl std::fmt::Display for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.tie {
            write!(
                f,
                "routes `{}` and `{}` both match `{}` with the same priority: Kong 3.9 picks one by route id",
                self.winner, self.loser, self.example
            )
        } else {
            write!(
                f,
                "route `{}` takes `{}` from route `{}`: Kong 3.9 ranks matched methods and headers before path length",
                self.winner, self.example, self.loser
            )
        }
    }
}

/// Every pair of routes of `doc` that can shadow each other: a request matched by both goes
/// to the one of higher priority, which is a problem unless that one is the more specific
/// route (its requests are a subset of the other's: a deliberate carve-out, like a catch-all
/// below a longer path), and always a problem on equal priority.
pub fn shadowing(doc: &Value) -> Vec<Shadow> {
    let routes = ranked(doc);
    let mut out = Vec::new();
    for (i, a) in routes.iter().enumerate() {
        for b in routes.iter().skip(i + 1) {
            if a.name == b.name {
                continue;
            }
            let Some(example) = common_request(a, b) else {
                continue;
            };
            let (hi, lo) = if a.priority >= b.priority {
                (a, b)
            } else {
                (b, a)
            };
            let tie = a.priority == b.priority;
            if tie || !within(hi, lo) {
                out.push(Shadow {
                    winner: hi.name.clone(),
                    loser: lo.name.clone(),
                    example,
                    tie,
                });
            }
        }
    }
    out.sort_by(|x, y| (&x.winner, &x.loser).cmp(&(&y.winner, &y.loser)));
    out.dedup();
    out
}

/// A request both routes match, if there is one.
fn common_request(a: &Ranked, b: &Ranked) -> Option<String> {
    let method = match (a.methods.is_empty(), b.methods.is_empty()) {
        (true, true) => "*".to_string(),
        (true, false) => b.methods.first()?.clone(),
        (false, true) => a.methods.first()?.clone(),
        (false, false) => a.methods.iter().find(|m| b.methods.contains(m))?.clone(),
    };
    for (name, values) in &a.headers {
        if let Some((_, other)) = b.headers.iter().find(|(n, _)| n == name) {
            if !values.iter().any(|v| other.contains(v)) {
                return None;
            }
        }
    }
    let path = match (a.paths.is_empty(), b.paths.is_empty()) {
        (true, true) => "/".to_string(),
        (true, false) => any_path(&b.paths)?,
        (false, true) => any_path(&a.paths)?,
        (false, false) => a
            .paths
            .iter()
            .find_map(|p| b.paths.iter().find_map(|q| p.overlap(q)))?,
    };
    Some(format!("{method} {path}"))
}

fn any_path(paths: &[Path]) -> Option<String> {
    paths.first().map(|p| match p {
        Path::Prefix(s) | Path::Segment(s) => s.clone(),
        Path::Regex(r) => format!("~{r}"),
    })
}

/// Whether every request `a` matches, `b` matches too.
fn within(a: &Ranked, b: &Ranked) -> bool {
    let methods = b.methods.is_empty()
        || (!a.methods.is_empty() && a.methods.iter().all(|m| b.methods.contains(m)));
    let headers = b.headers.iter().all(|(name, values)| {
        a.headers
            .iter()
            .find(|(n, _)| n == name)
            .is_some_and(|(_, mine)| mine.iter().all(|v| values.contains(v)))
    });
    let paths = b.paths.is_empty()
        || (!a.paths.is_empty() && a.paths.iter().all(|p| b.paths.iter().any(|q| p.within(q))));
    methods && headers && paths
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(routes: Value) -> Value {
        json!({"services": [{"name": "s", "routes": routes}]})
    }

    fn seg(p: &str) -> String {
        Path::segment_regex(p)
    }

    #[test]
    fn priorities_follow_kong_3_9() {
        // Methods count before path length.
        let get_short = json!({"name": "a", "paths": ["/v1"], "methods": ["GET"]});
        let long = json!({"name": "b", "paths": ["/v1/stacks"]});
        let pa = priority(&get_short, &[Path::parse("/v1")]);
        let pb = priority(&long, &[Path::parse("/v1/stacks")]);
        assert!(pa > pb);
        assert_eq!(pb, (1u64 << 61) | 10);
        // A regex path beats any prefix of the same weight; regex_priority orders regexes.
        let r = json!({"name": "r", "paths": [seg("/v1")], "regex_priority": 3});
        assert_eq!(
            priority(&r, &[Path::parse(&seg("/v1"))]),
            (1u64 << 61) | (1 << 51) | (3 << 19)
        );
        // Headers: weight and count.
        let h = json!({"name": "h", "paths": ["/x"], "headers": {"x-a": ["1"], "x-b": ["2"]}});
        assert_eq!(
            priority(&h, &[Path::parse("/x")]),
            (2u64 << 61) | (2 << 52) | 2
        );
    }

    #[test]
    fn paths_of_different_lengths_are_split() {
        let d = doc(json!([{"name": "a", "paths": ["/ab", "/cd", "/efg", seg("/x")]}]));
        let r = ranked(&d);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].paths.len(), 2);
    }

    #[test]
    fn segment_paths_match_whole_segments() {
        let admin = Path::parse(&seg("/v1/admin"));
        assert_eq!(admin, Path::Segment("/v1/admin".into()));
        assert!(admin
            .overlap(&Path::parse(&seg("/v1/administrator")))
            .is_none());
        assert!(admin
            .overlap(&Path::parse(&seg("/v1/admin/users")))
            .is_some());
        // A plain prefix still matches across the segment boundary.
        assert!(Path::parse("/v1/admin")
            .overlap(&Path::parse(&seg("/v1/administrator")))
            .is_some());
        assert_eq!(Path::parse(&seg("/a.b")), Path::Segment("/a.b".into()));
        assert!(matches!(Path::parse("~/a.*"), Path::Regex(_)));
    }

    #[test]
    fn a_route_with_methods_shadows_a_deeper_one() {
        let d = doc(json!([
            {"name": "short-get", "paths": [seg("/v1")], "methods": ["GET"], "regex_priority": 3},
            {"name": "stacks", "paths": [seg("/v1/stacks")], "regex_priority": 10},
        ]));
        let s = shadowing(&d);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].winner, "short-get");
        assert_eq!(s[0].loser, "stacks");
        assert_eq!(s[0].example, "GET /v1/stacks");
        assert!(!s[0].tie);
    }

    #[test]
    fn equal_priorities_that_overlap_are_ties() {
        let d = doc(json!([
            {"name": "a", "paths": ["/v1"]},
            {"name": "b", "paths": ["/v2", "/v1"]},
        ]));
        let s = shadowing(&d);
        assert_eq!(s.len(), 1);
        assert!(s[0].tie);
    }

    #[test]
    fn carve_outs_and_disjoint_routes_are_fine() {
        let d = doc(json!([
            {"name": "catch-all", "paths": [seg("/api/internal")], "regex_priority": 13},
            {"name": "exchange", "paths": [seg("/api/internal/sso/exchange")], "methods": ["POST"], "regex_priority": 26},
            {"name": "admin", "paths": [seg("/v1/admin")], "regex_priority": 9},
            {"name": "administrator", "paths": [seg("/v1/administrator")], "regex_priority": 17},
            {"name": "get", "paths": [seg("/x")], "methods": ["GET"], "regex_priority": 2},
            {"name": "post", "paths": [seg("/x")], "methods": ["POST"], "regex_priority": 2},
            {"name": "fd", "paths": [seg("/y")], "headers": {"x-azure-fdid": ["1"]}, "regex_priority": 2},
            {"name": "fd2", "paths": [seg("/y")], "headers": {"x-azure-fdid": ["2"]}, "regex_priority": 2},
        ]));
        assert!(shadowing(&d).is_empty(), "{:?}", shadowing(&d));
    }
}
