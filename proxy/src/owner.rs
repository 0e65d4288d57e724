//! Route ownership: while a rollout controls a route's weights, it owns the route, and manual
//! weight writes on the admin API are refused (409) unless forced.
//!
//! Two writers of one route's weights would fight: an operator's `PUT /routes/web/weights` during a
//! rollout is overwritten at the rollout's next step, and meanwhile the rollout judges a split it
//! did not set. Argo Rollouts and Flagger solve the same problem the same way: the controller owns
//! the traffic split of a route it is rolling out, and operators steer the rollout instead.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The controller that owns a route: the rollout whose traffic setter publishes its weights.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteOwner {
    /// The rollout's id (rises by one per rollout of the route).
    pub rollout: u64,
    /// Whether the rollout has promoted its preview and is retiring the former active backend:
    /// it can then no longer be paused or aborted, so a refused write's answer says to wait for
    /// it to complete instead of suggesting those commands. Sent only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promoted: bool,
}

impl fmt::Display for RouteOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rollout {}", self.rollout)
    }
}

/// Who is writing a route's weights through [`Proxy::set_weights_as`](crate::Proxy::set_weights_as).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightWriter {
    /// The route's owner (or a caller that owns nothing and knows no owner exists, such as
    /// [`Proxy::set_weights`](crate::Proxy::set_weights)): never refused for ownership.
    Owner,
    /// An operator through the admin API: refused with [`Error::Owned`](crate::Error::Owned) while
    /// the route has an owner.
    Operator,
    /// An operator who forces the write over the owner (`?force=true`): applied, logged as a
    /// warning; the owner may set the weights again at its next step.
    ForcedOperator,
}
