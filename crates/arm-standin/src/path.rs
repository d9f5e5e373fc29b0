//! ARM request paths: which kind of thing a path names, with ARM's case-insensitive keys and
//! the caller's casing kept for display.
//!
//! Resource paths follow `/subscriptions/{s}/resourceGroups/{rg}/providers/{ns}/{type}/{name}`
//! with nested `/{childType}/{childName}` pairs and extension sections
//! (`…/{name}/providers/Microsoft.Authorization/roleAssignments/{id}`). A path ending in a
//! type instead of a name is the collection of that type under its parent.

use percent_encoding::percent_decode_str;

/// What a request path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/{tenant}/oauth2/v2.0/token`.
    Token,
    /// `/subscriptions/{s}`.
    Subscription { sub: String },
    /// `/subscriptions/{s}/providers/{ns}`.
    Provider { sub: String, namespace: String },
    /// `/subscriptions/{s}/providers/{ns}/{type}`: every resource of a type.
    SubscriptionList {
        sub: String,
        namespace: String,
        type_: String,
    },
    /// `/subscriptions/{s}/resourceGroups`.
    ResourceGroups { sub: String },
    /// `/subscriptions/{s}/resourceGroups/{rg}/resources`.
    GroupResources { sub: String, group_key: String },
    /// `/subscriptions/{s}/providers/Microsoft.KeyVault/deletedVaults`.
    DeletedVaults { sub: String },
    /// `/subscriptions/{s}/providers/Microsoft.KeyVault/locations/{loc}/deletedVaults/{name}`,
    /// with `purge` when the path ends in `/purge`.
    DeletedVault {
        sub: String,
        location: String,
        name: String,
        purge: bool,
    },
    /// A resource (a resource group included).
    Resource(ResourcePath),
    /// The collection of one type under a parent (a resource group or a resource).
    Collection(CollectionPath),
    /// Nothing ARM knows.
    Unknown,
}

/// A resource's path, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ResourcePath {
    /// The path with ARM's fixed words in canonical case and names as the caller wrote them.
    pub(crate) path: String,
    /// The lower-case path: the resource's identity.
    pub(crate) key: String,
    /// The subscription id.
    pub(crate) sub: String,
    /// The key of the resource group (the resource's own key for a group).
    pub(crate) group_key: String,
    /// The resource group's name as written.
    pub(crate) group: String,
    /// The key of the parent (a group, or a resource for nested and extension resources);
    /// None for a resource group.
    pub(crate) parent_key: Option<String>,
    /// The full type, as written: `Microsoft.App/containerApps`,
    /// `Microsoft.DBforPostgreSQL/flexibleServers/databases`.
    pub(crate) type_: String,
    /// The name, as written.
    pub(crate) name: String,
}

impl ResourcePath {
    /// The lower-case full type (profile key).
    pub(crate) fn type_key(&self) -> String {
        self.type_.to_ascii_lowercase()
    }

    /// The namespace (`Microsoft.App`).
    pub(crate) fn namespace(&self) -> &str {
        self.type_.split('/').next().unwrap_or("")
    }

    /// Whether this is a resource group.
    pub(crate) fn is_group(&self) -> bool {
        self.parent_key.is_none()
    }
}

/// A collection's path, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CollectionPath {
    /// The lower-case path of the collection; items are `{key}/{name}`.
    pub(crate) key: String,
    /// The subscription id.
    pub(crate) sub: String,
    /// The key of the resource group.
    pub(crate) group_key: String,
    /// The key of the parent whose children are listed.
    pub(crate) parent_key: String,
    /// The full type of the items, as written.
    pub(crate) type_: String,
}

fn fixed(segment: &str) -> Option<&'static str> {
    ["subscriptions", "resourceGroups", "providers"]
        .into_iter()
        .find(|word| word.eq_ignore_ascii_case(segment))
}

fn is(segment: &str, word: &str) -> bool {
    segment.eq_ignore_ascii_case(word)
}

/// The segments of a path, percent-decoded.
pub(crate) fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect()
}

fn join(segments: &[String]) -> String {
    let mut out = String::new();
    for segment in segments {
        out.push('/');
        out.push_str(fixed(segment).unwrap_or(segment));
    }
    out
}

/// The lower-case key of a path (its identity in ARM).
pub(crate) fn key_of(segments: &[String]) -> String {
    join(segments).to_ascii_lowercase()
}

/// Classifies a request path.
pub(crate) fn route(path: &str) -> Route {
    let s = segments(path);
    let n = s.len();
    if n == 4 && is(&s[1], "oauth2") && is(&s[2], "v2.0") && is(&s[3], "token") {
        return Route::Token;
    }
    if n < 2 || !is(&s[0], "subscriptions") {
        return Route::Unknown;
    }
    let sub = s[1].clone();
    if n == 2 {
        return Route::Subscription { sub };
    }
    if is(&s[2], "providers") {
        return subscription_providers(sub, &s);
    }
    if !is(&s[2], "resourceGroups") {
        return Route::Unknown;
    }
    if n == 3 {
        return Route::ResourceGroups { sub };
    }
    let group_key = key_of(&s[..4]);
    if n == 4 {
        return Route::Resource(ResourcePath {
            path: join(&s),
            key: group_key.clone(),
            sub,
            group_key,
            group: s[3].clone(),
            parent_key: None,
            type_: "Microsoft.Resources/resourceGroups".into(),
            name: s[3].clone(),
        });
    }
    if n == 5 && is(&s[4], "resources") {
        return Route::GroupResources { sub, group_key };
    }
    provider_sections(sub, group_key, &s)
}

fn subscription_providers(sub: String, s: &[String]) -> Route {
    let n = s.len();
    match n {
        4 => Route::Provider {
            sub,
            namespace: s[3].clone(),
        },
        5 if is(&s[3], "Microsoft.KeyVault") && is(&s[4], "deletedVaults") => {
            Route::DeletedVaults { sub }
        }
        5 => Route::SubscriptionList {
            sub,
            namespace: s[3].clone(),
            type_: s[4].clone(),
        },
        8 | 9
            if is(&s[3], "Microsoft.KeyVault")
                && is(&s[4], "locations")
                && is(&s[6], "deletedVaults")
                && (n == 8 || is(&s[8], "purge")) =>
        {
            Route::DeletedVault {
                sub,
                location: s[5].clone(),
                name: s[7].clone(),
                purge: n == 9,
            }
        }
        _ => Route::Unknown,
    }
}

/// Parses `…/resourceGroups/{rg}` followed by one or more `providers/{ns}/{type}/{name}…`
/// sections.
fn provider_sections(sub: String, group_key: String, s: &[String]) -> Route {
    let n = s.len();
    let mut i = 4;
    loop {
        if i + 2 > n || !is(&s[i], "providers") {
            return Route::Unknown;
        }
        let namespace = &s[i + 1];
        // The parent of the first pair of a section is the scope before `providers`.
        let mut parent_len = i;
        let mut types: Vec<&str> = Vec::new();
        i += 2;
        if i >= n {
            return Route::Unknown;
        }
        while i < n && !is(&s[i], "providers") {
            types.push(&s[i]);
            let type_ = format!("{namespace}/{}", types.join("/"));
            if i + 1 == n {
                return Route::Collection(CollectionPath {
                    key: key_of(s),
                    sub,
                    group_key,
                    parent_key: key_of(&s[..parent_len]),
                    type_,
                });
            }
            if i + 2 == n {
                return Route::Resource(ResourcePath {
                    path: join(s),
                    key: key_of(s),
                    sub,
                    group_key,
                    group: s[3].clone(),
                    parent_key: Some(key_of(&s[..parent_len])),
                    type_,
                    name: s[i + 1].clone(),
                });
            }
            parent_len = i + 2;
            i += 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(path: &str) -> ResourcePath {
        match route(path) {
            Route::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn groups_resources_children_and_extensions_parse() {
        let rg = resource("/subscriptions/S/resourcegroups/My-RG");
        assert_eq!(rg.path, "/subscriptions/S/resourceGroups/My-RG");
        assert_eq!(rg.key, "/subscriptions/s/resourcegroups/my-rg");
        assert!(rg.is_group());

        let app = resource(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/containerApps/Web",
        );
        assert_eq!(app.type_, "Microsoft.App/containerApps");
        assert_eq!(app.name, "Web");
        assert_eq!(
            app.parent_key.as_deref(),
            Some("/subscriptions/s/resourcegroups/rg")
        );

        let db = resource(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DBforPostgreSQL/flexibleServers/pg/databases/app",
        );
        assert_eq!(
            db.type_,
            "Microsoft.DBforPostgreSQL/flexibleServers/databases"
        );
        assert_eq!(
            db.parent_key.as_deref(),
            Some("/subscriptions/s/resourcegroups/rg/providers/microsoft.dbforpostgresql/flexibleservers/pg")
        );

        let ra = resource(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv/providers/Microsoft.Authorization/roleAssignments/123",
        );
        assert_eq!(ra.type_, "Microsoft.Authorization/roleAssignments");
        assert_eq!(
            ra.parent_key.as_deref(),
            Some("/subscriptions/s/resourcegroups/rg/providers/microsoft.keyvault/vaults/kv")
        );
    }

    #[test]
    fn collections_and_subscription_routes_parse() {
        match route(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Cdn/profiles/fd/afdEndpoints",
        ) {
            Route::Collection(c) => {
                assert_eq!(c.type_, "Microsoft.Cdn/profiles/afdEndpoints");
                assert_eq!(
                    c.parent_key,
                    "/subscriptions/s/resourcegroups/rg/providers/microsoft.cdn/profiles/fd"
                );
            }
            other => panic!("{other:?}"),
        }
        match route("/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/containerApps") {
            Route::Collection(c) => assert_eq!(c.parent_key, "/subscriptions/s/resourcegroups/rg"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            route("/subscriptions/s"),
            Route::Subscription { sub: "s".into() }
        );
        assert_eq!(
            route("/subscriptions/s/resourcegroups"),
            Route::ResourceGroups { sub: "s".into() }
        );
        assert_eq!(route("/tenant-1/oauth2/v2.0/token"), Route::Token);
        assert!(matches!(
            route("/subscriptions/s/providers/Microsoft.KeyVault/locations/westeurope/deletedVaults/kv/purge"),
            Route::DeletedVault { purge: true, .. }
        ));
        assert_eq!(route("/nothing/here"), Route::Unknown);
        assert_eq!(
            route("/subscriptions/s/resourceGroups/rg/providers"),
            Route::Unknown
        );
    }

    #[test]
    fn names_are_percent_decoded() {
        let r = resource("/subscriptions/s/resourceGroups/rg/providers/Microsoft.X/things/a%20b");
        assert_eq!(r.name, "a b");
    }
}
