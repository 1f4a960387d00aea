//! Who may do what: the caller as the edge established it, and the answer a policy gives.
//! Each aggregate says its own rules ([`Policy`], in its module); this file holds only what
//! they share. The rules are pure: a caller, an entity's state, a command or a lookup in;
//! allowed, forbidden or hidden out.
//!
//! Decisions every policy here follows:
//! - an entity a caller may not read is **hidden**: reading it, or commanding it, answers
//!   404 exactly as if it did not exist, so ids cannot be probed;
//! - an entity a caller may read but not change this way is **forbidden** (403), with the rule
//!   that refused it;
//! - creating with an id that is taken answers 409 whoever asks (ids are chosen by clients, and
//!   a retry must be told its first attempt won); server-chosen ids are random;
//! - a caller with several roles may do what any of its roles may.

use crate::aggregate::Aggregate;
use crate::ports::LookupKind;
use std::collections::BTreeSet;

/// A role, as a Cognito group (or a local token's `cognito:groups`) names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Books rides and follows their own.
    Rider,
    /// Takes open bookings and drives the rides assigned to them.
    Driver,
    /// Runs the ride operation: assigns drivers, adjusts fares, cancels, sees every ride.
    Dispatcher,
    /// Sees everything, rides and videos, and may do what a dispatcher does.
    Operator,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Rider, Role::Driver, Role::Dispatcher, Role::Operator];

    /// The group that grants the role.
    pub fn group(self) -> &'static str {
        match self {
            Role::Rider => "riders",
            Role::Driver => "drivers",
            Role::Dispatcher => "dispatchers",
            Role::Operator => "operators",
        }
    }

    pub fn from_group(group: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.group() == group)
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A signed-in person: their subject (`sub`) and the roles of their groups.
    User {
        subject: String,
        roles: BTreeSet<Role>,
    },
    /// A service calling with its own (IAM) credentials, such as the video pipeline.
    Service { principal: String },
}

impl Caller {
    pub fn user(subject: impl Into<String>, roles: impl IntoIterator<Item = Role>) -> Caller {
        Caller::User {
            subject: subject.into(),
            roles: roles.into_iter().collect(),
        }
    }

    pub fn service(principal: impl Into<String>) -> Caller {
        Caller::Service {
            principal: principal.into(),
        }
    }

    /// Who did it, as recorded on events.
    pub fn actor(&self) -> &str {
        match self {
            Caller::User { subject, .. } => subject,
            Caller::Service { principal } => principal,
        }
    }

    /// The user's subject when they hold `role`.
    pub fn as_role(&self, role: Role) -> Option<&str> {
        match self {
            Caller::User { subject, roles } if roles.contains(&role) => Some(subject),
            _ => None,
        }
    }

    pub fn has(&self, role: Role) -> bool {
        self.as_role(role).is_some()
    }

    pub fn is_service(&self) -> bool {
        matches!(self, Caller::Service { .. })
    }
}

/// A policy's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// The caller may see the entity but not do this (403), naming the rule.
    Forbidden(&'static str),
    /// The caller may not know the entity exists (404, as if it did not).
    Hidden,
}

impl Access {
    pub fn allow_if(condition: bool, rule: &'static str) -> Access {
        if condition {
            Access::Allowed
        } else {
            Access::Forbidden(rule)
        }
    }
}

/// An aggregate's access rules.
pub trait Policy: Aggregate {
    /// May `caller` issue `command` on an entity in `state` (the default state when it does
    /// not exist yet)? Checked before `decide`.
    fn may_command(caller: &Caller, state: &Self::State, command: &Self::Command) -> Access;

    /// May `caller` read the entity (its view, history and time travel)? Checked on its
    /// current state.
    fn may_read(caller: &Caller, state: &Self::State) -> Access;

    /// May `caller` list this aggregate's entities under a lookup (`?rider_id=`, `?status=`)?
    fn may_list(caller: &Caller, lookup: LookupKind, value: &str) -> Access;

    /// Fills what the identity says into a command body before it is decoded (a rider books
    /// as themself without naming themself). A value given for it is left to `may_command`.
    fn complete_from_identity(
        _caller: &Caller,
        _command: &str,
        _body: &mut serde_json::Map<String, serde_json::Value>,
    ) {
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_name_roles() {
        for role in Role::ALL {
            assert_eq!(Role::from_group(role.group()), Some(role));
        }
        assert_eq!(Role::from_group("admins"), None);
    }
}
