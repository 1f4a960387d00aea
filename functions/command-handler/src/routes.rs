//! The command routes: `POST /rides`, `POST /rides/{id}/<command>`, and the same for videos.
//! Each route names the domain command its JSON body is decoded into.

use matchit::Router;
use timeline_core::registry::{Kind, KINDS};

/// A matched command route: which aggregate, which command (the serde tag of the domain's
/// command enum), and whether it creates the entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandRoute {
    pub kind: &'static Kind,
    pub command: &'static str,
    pub creates: bool,
    /// Called by a service (IAM), not by users.
    pub service: bool,
}

/// Every route the handler serves, as `(path template, route)`, from the registry of
/// aggregates; the OpenAPI document is checked against this list.
pub fn routes() -> Vec<(String, CommandRoute)> {
    KINDS
        .iter()
        .flat_map(|kind| {
            kind.commands.iter().map(move |c| {
                let route = CommandRoute {
                    kind,
                    command: c.command,
                    creates: c.creates,
                    service: c.service,
                };
                (kind.command_path(c), route)
            })
        })
        .collect()
}

pub struct Routes {
    router: Router<CommandRoute>,
}

impl Default for Routes {
    fn default() -> Self {
        let mut router = Router::new();
        for (path, route) in routes() {
            router
                .insert(path, route)
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
