//! The command routes: `POST /rides`, `POST /rides/{id}/<command>`, and the same for videos.
//! Each route names the domain command its JSON body is decoded into.

use matchit::Router;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    Ride,
    Video,
}

/// A matched command route: which aggregate, which command (the serde tag of the domain's
/// command enum), and whether it creates the entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandRoute {
    pub domain: Domain,
    pub command: &'static str,
    pub creates: bool,
}

/// Every route the handler serves, as `(path template, route)`; the OpenAPI document is
/// checked against this list.
pub const ROUTES: &[(&str, CommandRoute)] = &[
    ("/rides", route(Domain::Ride, "book", true)),
    (
        "/rides/{id}/assign-driver",
        route(Domain::Ride, "assign_driver", false),
    ),
    ("/rides/{id}/start", route(Domain::Ride, "start", false)),
    (
        "/rides/{id}/change-destination",
        route(Domain::Ride, "change_destination", false),
    ),
    (
        "/rides/{id}/adjust-fare",
        route(Domain::Ride, "adjust_fare", false),
    ),
    (
        "/rides/{id}/complete",
        route(Domain::Ride, "complete", false),
    ),
    ("/rides/{id}/cancel", route(Domain::Ride, "cancel", false)),
    ("/videos", route(Domain::Video, "upload", true)),
    (
        "/videos/{id}/start-processing",
        route(Domain::Video, "start_processing", false),
    ),
    (
        "/videos/{id}/progress",
        route(Domain::Video, "report_progress", false),
    ),
    (
        "/videos/{id}/succeed",
        route(Domain::Video, "succeed", false),
    ),
    ("/videos/{id}/fail", route(Domain::Video, "fail", false)),
];

const fn route(domain: Domain, command: &'static str, creates: bool) -> CommandRoute {
    CommandRoute {
        domain,
        command,
        creates,
    }
}

pub struct Routes {
    router: Router<CommandRoute>,
}

impl Default for Routes {
    fn default() -> Self {
        let mut router = Router::new();
        for (path, route) in ROUTES {
            router
                .insert(*path, *route)
                .expect("route templates are distinct");
        }
        Routes { router }
    }
}

impl Routes {
    /// The route for a path, and the entity id in it (None for creating routes).
    pub fn find<'p>(&self, path: &'p str) -> Option<(CommandRoute, Option<&'p str>)> {
        let matched = self.router.at(path).ok()?;
        Some((*matched.value, matched.params.get("id")))
    }
}
