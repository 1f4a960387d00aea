//! The registry of aggregates: the one list every dispatch goes through (command routes,
//! query routes, projection, replay fold, time travel). An aggregate is registered by
//! implementing [`Entity`] and naming it once in [`register!`] below; a type that is not
//! registered is refused everywhere with [`Unregistered`], never guessed.

use crate::access::{Access, Caller, Policy};
use crate::aggregate::Aggregate;
use crate::integration::Publishes;
use crate::ports::LookupKind;
use crate::ride::RideAggregate;
use crate::video::VideoAggregate;
use crate::views::ReadModel;
use serde::Deserialize;

/// Everything the edges need to know about an aggregate beyond its rules and read model.
pub trait Entity: ReadModel + Policy + Publishes {
    /// The collection in HTTP paths: `/rides`, `/rides/{id}/...`.
    const COLLECTION: &'static str;
    /// The status families the by-status lookup lists under (`?status=`).
    const STATUSES: &'static [&'static str];
    /// Filters besides status: (query parameter, lookup).
    const FILTERS: &'static [(&'static str, LookupKind)];
    /// The command routes, each naming the serde tag of a command.
    const COMMANDS: &'static [CommandRoute];
}

/// One command route: `POST /{collection}` for the command that creates the entity,
/// `POST /{collection}/{id}/{path}` for the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandRoute {
    /// The path segment after the id (empty for the creating command).
    pub path: &'static str,
    /// The command's serde tag.
    pub command: &'static str,
    pub creates: bool,
    /// Called by a service with its own (IAM) credentials, not by users: an IAM-authorized
    /// route on AWS.
    pub service: bool,
}

impl CommandRoute {
    pub const fn creates(command: &'static str) -> Self {
        CommandRoute {
            path: "",
            command,
            creates: true,
            service: false,
        }
    }

    pub const fn on(path: &'static str, command: &'static str) -> Self {
        CommandRoute {
            path,
            command,
            creates: false,
            service: false,
        }
    }

    /// A route a service calls (see [`CommandRoute::service`]).
    pub const fn for_service(path: &'static str, command: &'static str) -> Self {
        CommandRoute {
            service: true,
            ..CommandRoute::on(path, command)
        }
    }
}

/// A registered aggregate, as data: what routing and validation need without its types.
#[derive(Debug, PartialEq, Eq)]
pub struct Kind {
    /// As in envelopes and stream keys: `ride`.
    pub aggregate_type: &'static str,
    pub collection: &'static str,
    pub statuses: &'static [&'static str],
    pub filters: &'static [(&'static str, LookupKind)],
    pub commands: &'static [CommandRoute],
}

impl Kind {
    pub const fn of<A: Entity>() -> Kind {
        Kind {
            aggregate_type: A::TYPE,
            collection: A::COLLECTION,
            statuses: A::STATUSES,
            filters: A::FILTERS,
            commands: A::COMMANDS,
        }
    }

    /// The problem code for an entity that does not exist, e.g. `ride.not_found`.
    pub fn not_found_code(&self) -> String {
        format!("{}.not_found", self.aggregate_type)
    }

    /// The path template of a command route.
    pub fn command_path(&self, route: &CommandRoute) -> String {
        if route.creates {
            format!("/{}", self.collection)
        } else {
            format!("/{}/{{id}}/{}", self.collection, route.path)
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.aggregate_type)
    }
}

/// Work to do for one aggregate type, chosen at run time by name: [`dispatch`] calls
/// `visit` with the registered type.
pub trait Visitor {
    type Output;
    fn visit<A: Entity>(self) -> Self::Output;
}

/// An aggregate type no module registers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no aggregate of type {0:?} is registered")]
pub struct Unregistered(pub String);

macro_rules! register {
    ($($aggregate:ty),+ $(,)?) => {
        /// Every registered aggregate.
        pub const KINDS: &[Kind] = &[$(Kind::of::<$aggregate>()),+];

        /// Runs `visitor` for the aggregate registered under `aggregate_type`.
        pub fn dispatch<V: Visitor>(
            aggregate_type: &str,
            visitor: V,
        ) -> Result<V::Output, Unregistered> {
            $(
                if aggregate_type == <$aggregate as Aggregate>::TYPE {
                    return Ok(visitor.visit::<$aggregate>());
                }
            )+
            Err(Unregistered(aggregate_type.to_owned()))
        }
    };
}

register!(RideAggregate, VideoAggregate);

/// The registered aggregate of a type.
pub fn kind(aggregate_type: &str) -> Result<&'static Kind, Unregistered> {
    KINDS
        .iter()
        .find(|k| k.aggregate_type == aggregate_type)
        .ok_or_else(|| Unregistered(aggregate_type.to_owned()))
}

/// Whether a request path (`/videos/v1/progress`) is a command route a service calls.
pub fn service_route(path: &str) -> bool {
    let mut parts = path.trim_start_matches('/').split('/');
    let (Some(collection), Some(_id), Some(command), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    by_collection(collection)
        .is_some_and(|k| k.commands.iter().any(|c| c.service && c.path == command))
}

/// The registered aggregate served under `/{collection}`.
pub fn by_collection(collection: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.collection == collection)
}

/// May `caller` read an entity whose current state is `state` (as stored: a view's `state`
/// or a head's)? An unregistered type or a state this build cannot read is hidden.
pub fn may_read(caller: &Caller, aggregate_type: &str, state: &serde_json::Value) -> Access {
    struct Read<'a>(&'a Caller, &'a serde_json::Value);
    impl Visitor for Read<'_> {
        type Output = Access;
        fn visit<A: Entity>(self) -> Access {
            match A::State::deserialize(self.1) {
                Ok(state) => A::may_read(self.0, &state),
                Err(e) => {
                    tracing::error!(error = %e, "a stored state this build cannot read; hidden");
                    Access::Hidden
                }
            }
        }
    }
    dispatch(aggregate_type, Read(caller, state)).unwrap_or(Access::Hidden)
}

/// May `caller` list entities of `aggregate_type` under a lookup?
pub fn may_list(caller: &Caller, aggregate_type: &str, lookup: LookupKind, value: &str) -> Access {
    struct List<'a>(&'a Caller, LookupKind, &'a str);
    impl Visitor for List<'_> {
        type Output = Access;
        fn visit<A: Entity>(self) -> Access {
            A::may_list(self.0, self.1, self.2)
        }
    }
    dispatch(aggregate_type, List(caller, lookup, value)).unwrap_or(Access::Hidden)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Name;
    impl Visitor for Name {
        type Output = &'static str;
        fn visit<A: Entity>(self) -> &'static str {
            A::COLLECTION
        }
    }

    #[test]
    fn dispatch_finds_each_registered_type_and_refuses_any_other() {
        assert_eq!(dispatch("ride", Name), Ok("rides"));
        assert_eq!(dispatch("video", Name), Ok("videos"));
        assert_eq!(dispatch("parcel", Name), Err(Unregistered("parcel".into())));
        assert_eq!(dispatch("Ride", Name), Err(Unregistered("Ride".into())));
    }

    #[test]
    fn service_routes_are_the_pipelines_reports_only() {
        for path in [
            "/videos/v1/start-processing",
            "/videos/v1/progress",
            "/videos/v1/fail",
        ] {
            assert!(service_route(path), "{path}");
        }
        for path in [
            "/videos",
            "/videos/v1",
            "/rides/r1/start",
            "/videos/v1/progress/x",
        ] {
            assert!(!service_route(path), "{path}");
        }
    }

    #[test]
    fn types_collections_and_command_paths_are_distinct() {
        let mut names: Vec<&str> = KINDS.iter().map(|k| k.aggregate_type).collect();
        let mut collections: Vec<&str> = KINDS.iter().map(|k| k.collection).collect();
        let mut paths: Vec<String> = KINDS
            .iter()
            .flat_map(|k| k.commands.iter().map(|c| k.command_path(c)))
            .collect();
        for list in [&mut names, &mut collections] {
            let n = list.len();
            list.sort();
            list.dedup();
            assert_eq!(list.len(), n);
        }
        let n = paths.len();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), n);
        for kind in KINDS {
            assert_eq!(
                kind.commands.iter().filter(|c| c.creates).count(),
                1,
                "{kind:?}"
            );
            assert_eq!(by_collection(kind.collection), Some(kind));
            assert_eq!(self::kind(kind.aggregate_type), Ok(kind));
        }
    }
}
