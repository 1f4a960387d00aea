//! The query routes: `GET /rides`, `GET /rides/{id}`, `GET /rides/{id}/history`, and the
//! same for videos.

use matchit::Router;
use timeline_core::registry::{Kind, KINDS};

/// Every path template the function serves (all `GET`), for each registered aggregate; the
/// OpenAPI document is checked against this list.
pub fn routes() -> Vec<(String, QueryRoute)> {
    KINDS
        .iter()
        .flat_map(|kind| {
            let c = kind.collection;
            [
                (format!("/{c}"), Resource::Collection),
                (format!("/{c}/{{id}}"), Resource::Entity),
                (format!("/{c}/{{id}}/history"), Resource::History),
            ]
            .map(|(path, resource)| (path, QueryRoute { kind, resource }))
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `/rides`: a list under one lookup.
    Collection,
    /// `/rides/{id}`: the current view.
    Entity,
    /// `/rides/{id}/history`: the audit trail.
    History,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryRoute {
    pub kind: &'static Kind,
    pub resource: Resource,
}

pub struct Routes {
    router: Router<QueryRoute>,
}

impl Default for Routes {
    fn default() -> Self {
        let mut router = Router::new();
        for (template, route) in routes() {
            router
                .insert(template, route)
                .expect("route templates are distinct");
        }
        Routes { router }
    }
}

impl Routes {
    /// The route for a path, and the entity id in it (None for collections).
    pub fn find<'p>(&self, path: &'p str) -> Option<(QueryRoute, Option<&'p str>)> {
        let matched = self.router.at(path).ok()?;
        Some((*matched.value, matched.params.get("id")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_maps_to_its_domain_and_resource() {
        let routes = Routes::default();
        let find = |p| {
            routes
                .find(p)
                .map(|(r, id)| (r.kind.aggregate_type, r.resource, id))
        };
        assert_eq!(find("/rides"), Some(("ride", Resource::Collection, None)));
        assert_eq!(
            find("/rides/r1"),
            Some(("ride", Resource::Entity, Some("r1")))
        );
        assert_eq!(
            find("/videos/v1/history"),
            Some(("video", Resource::History, Some("v1")))
        );
        assert_eq!(find("/videos"), Some(("video", Resource::Collection, None)));
        assert_eq!(find("/rides/r1/start"), None);
        assert_eq!(find("/rides/"), None);
        assert_eq!(find("/drivers"), None);
    }
}
