//! The query routes: `GET /rides`, `GET /rides/{id}`, `GET /rides/{id}/history`, and the
//! same for videos.

use matchit::Router;
use timeline_core::ride::RideAggregate;
use timeline_core::video::VideoAggregate;
use timeline_core::Aggregate;

/// Every path template the function serves (all `GET`); the OpenAPI document is checked
/// against this list.
pub const ROUTES: &[&str] = &[
    "/rides",
    "/rides/{id}",
    "/rides/{id}/history",
    "/videos",
    "/videos/{id}",
    "/videos/{id}/history",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    Ride,
    Video,
}

impl Domain {
    /// The aggregate type, as in stream keys and lookups.
    pub fn aggregate_type(self) -> &'static str {
        match self {
            Domain::Ride => RideAggregate::TYPE,
            Domain::Video => VideoAggregate::TYPE,
        }
    }

    /// The problem code for an unknown entity, as the command side answers it.
    pub fn not_found_code(self) -> &'static str {
        match self {
            Domain::Ride => "ride.not_found",
            Domain::Video => "video.not_found",
        }
    }

    /// The status families the by-status lookup can be filtered by.
    pub fn statuses(self) -> &'static [&'static str] {
        match self {
            Domain::Ride => &[
                "booked",
                "driver_assigned",
                "in_progress",
                "completed",
                "cancelled",
            ],
            Domain::Video => &["uploaded", "processing", "success", "failed"],
        }
    }

    /// The lookups other than status a collection can be filtered by (query parameter,
    /// lookup kind).
    pub fn lookups(self) -> &'static [(&'static str, timeline_core::ports::LookupKind)] {
        use timeline_core::ports::LookupKind;
        match self {
            Domain::Ride => &[
                ("rider_id", LookupKind::Rider),
                ("driver_id", LookupKind::Driver),
            ],
            Domain::Video => &[],
        }
    }
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
    pub domain: Domain,
    pub resource: Resource,
}

pub struct Routes {
    router: Router<QueryRoute>,
}

fn route_of(template: &str) -> QueryRoute {
    let domain = if template.starts_with("/rides") {
        Domain::Ride
    } else {
        Domain::Video
    };
    let resource = if template.ends_with("/history") {
        Resource::History
    } else if template.ends_with("{id}") {
        Resource::Entity
    } else {
        Resource::Collection
    };
    QueryRoute { domain, resource }
}

impl Default for Routes {
    fn default() -> Self {
        let mut router = Router::new();
        for template in ROUTES {
            router
                .insert(*template, route_of(template))
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
        let find = |p| routes.find(p).map(|(r, id)| (r.domain, r.resource, id));
        assert_eq!(
            find("/rides"),
            Some((Domain::Ride, Resource::Collection, None))
        );
        assert_eq!(
            find("/rides/r1"),
            Some((Domain::Ride, Resource::Entity, Some("r1")))
        );
        assert_eq!(
            find("/videos/v1/history"),
            Some((Domain::Video, Resource::History, Some("v1")))
        );
        assert_eq!(
            find("/videos"),
            Some((Domain::Video, Resource::Collection, None))
        );
        assert_eq!(find("/rides/r1/start"), None);
        assert_eq!(find("/rides/"), None);
        assert_eq!(find("/drivers"), None);
    }
}
