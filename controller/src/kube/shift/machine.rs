//! One TrafficShift's rollout in memory, how a reconcile finds it (memory, status, or new), and
//! when it wants to be looked at again.

use std::sync::Arc;
use std::time::Duration;

use crossfade_proxy::weight::Slot;
use crossfade_proxy::{BackendSnapshot, ShadowSnapshot};
use kube::runtime::controller::Action;

use super::ACK_POLL;
use crate::analysis::{judge_for, Judge};
use crate::driver::kube::preview_name;
use crate::kube::crd::{CommandsSeen, TrafficShift, WeightsStatus};
use crate::kube::store::ShiftRecord;
use crate::rollout::{AbortCause, Input, OperatorCommand, Phase, Promotion, Reattach, Rollout};
use crate::spec::RolloutConfig;

/// One TrafficShift's rollout in memory: the persisted record plus what is not persisted (timers
/// live in the machine; the windows and waits are re-created by `Reattached`'s commands).
pub(super) struct Machine {
    pub(super) record: ShiftRecord,
    pub(super) judge: Arc<dyn Judge + Send + Sync>,
    pub(super) window_start: Option<(BackendSnapshot, BackendSnapshot)>,
    pub(super) first_window: Option<(BackendSnapshot, BackendSnapshot)>,
    /// The preview's shadow counters, summed over the proxies, when the shadow step's window
    /// opened (`None` at other steps, or when no proxy reported any).
    pub(super) shadow_start: Option<ShadowSnapshot>,
    /// `SwapRoles` ran: the target takes the new images and is watched until it has rolled out.
    pub(super) swap_requested: bool,
    /// `DrainActive` ran: the drain ends at this instant at the latest.
    pub(super) drain_deadline: Option<tokio::time::Instant>,
    /// Weights published and not yet applied by the proxies.
    pub(super) pending: Option<Pending>,
    /// `StopActive` ran: the preview Deployment is deleted.
    pub(super) stop_requested: bool,
    /// A command annotation was acted on or refused ([`crate::kube::command`]): the record must be
    /// written even when the machine made no transition (a refused command). Cleared by every
    /// write of the record.
    pub(super) unsaved: bool,
    /// The machine's progress deadline last kept in the record ([`keep_deadline`]).
    pub(super) deadline_kept: Option<tokio::time::Instant>,
    /// Operator commands given by annotation and fed to the machine, oldest first, with their
    /// annotation and value: their answers go to `status.commands.last`.
    pub(super) awaiting: std::collections::VecDeque<(OperatorCommand, &'static str, String)>,
    /// The TrafficShift as this controller's last status write returned it: the next reconcile's
    /// writes start from its resourceVersion, since the watch cache may not have seen it yet.
    pub(super) written: Option<TrafficShift>,
    /// The backends' revisions (pods' image digests) as last read, and when.
    pub(super) revisions: Option<super::exec::Observed>,
    /// Before promotion: since when the preview Deployment shows no ready replica, and when
    /// `spec.rollout.unreadyGrace` ends (`None` while it has one). Not persisted: after a
    /// restart the grace starts again.
    pub(super) preview_unready: Option<(tokio::time::Instant, tokio::time::Instant)>,
    /// Before promotion: the target Deployment (blue) shows no ready replica and that was said
    /// (a Warning Event `TargetUnready`); cleared once it has one again.
    pub(super) target_unready: bool,
    /// Both had no ready replica past the preview's grace and that was said (once, until the
    /// preview has one again or the rollout rolls back).
    pub(super) both_unready: bool,
    /// What the role swap's hand-over, or the preview kept after its drain, last said it waits
    /// for: the log says a wait once when it starts or its reason changes, not at every
    /// reconcile (one a second while it waits, check32).
    pub(super) waiting_said: Option<String>,
    /// The invalid spec generation already said to wait for this rollout to end (past promotion,
    /// or rolling back): `exec.rs`, `say_invalid_while_ending`. Not persisted: said again after a
    /// restart.
    pub(super) invalid_said: Option<i64>,
    /// Loaded from status again after this process had loaded it before (a failed reconcile
    /// dropped it from memory): the machine said so as `Reloaded` ([`Input::Reattached`] with
    /// [`Reattach::Reload`]), which is published or not as this says. `None` for the first load
    /// in this process (a controller restart or takeover: `Restarted`), and for a machine kept in
    /// memory from the start.
    pub(super) reloaded: Option<Reload>,
    /// Loaded from a record whose last publication the proxies had not applied yet
    /// (`rollout.weights_pending`): the first `SetWeights` of that same weight waits for that
    /// publication's acknowledgements instead of publishing it again (`exec.rs`). Before
    /// (session 41), each reload of a rollback whose weight was pending (after every failed
    /// reconcile) published a new weights generation and wrote it to status, and that write woke
    /// the next reconcile at once.
    pub(super) published_pending: bool,
}

/// A rollout reloaded from status by the process that had it in memory, after a failed
/// reconcile ([`super::reloads::Reloads::reload_of`]). Before (session 39), each reload after a
/// failed reconcile published `Restarted` ("crossfade restarted ..."), nine in six seconds for a
/// target whose patches were refused, though the controller never restarted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Reload {
    /// What the failed reconcile said (its error), or why the rollout was not in memory.
    pub(super) error: String,
    /// The kind of that failure ([`super::reloads::failure_kind`]): a said reload is remembered
    /// by it.
    pub(super) kind: String,
    /// Whether to say it: not when a reload after the same kind of failure was said since the
    /// last reconcile that succeeded (a persistent error is said once, not at every retry).
    pub(super) say: bool,
}

impl Reload {
    /// What the machine is told of this reload ([`Input::Reattached`]).
    fn cause(&self) -> Reattach {
        Reattach::Reload {
            error: self.error.clone(),
        }
    }
}

/// Weights published in `status.weights` that the proxies have not all applied yet.
#[derive(Clone, Debug)]
pub(super) struct Pending {
    /// The preview's weight, in basis points.
    pub(super) preview_bp: u32,
    /// `status.weights.generation` of the publication.
    pub(super) generation: u64,
    /// When it was published.
    pub(super) since: tokio::time::Instant,
    /// Whether the wait was reported as an Event already.
    pub(super) reported: bool,
}

// === impl Machine ===

impl Machine {
    pub(super) fn new(record: ShiftRecord) -> Machine {
        Machine {
            judge: judge_for(&record.rollout.config.analysis),
            record,
            window_start: None,
            first_window: None,
            shadow_start: None,
            swap_requested: false,
            drain_deadline: None,
            pending: None,
            stop_requested: false,
            unsaved: false,
            deadline_kept: None,
            awaiting: std::collections::VecDeque::new(),
            written: None,
            revisions: None,
            preview_unready: None,
            target_unready: false,
            both_unready: false,
            waiting_said: None,
            invalid_said: None,
            reloaded: None,
            published_pending: false,
        }
    }

    /// A new rollout of `shift`'s spec (`config`, validated from it; its generation), after
    /// rollout `previous` if there was one: numbered one above it, or 1 after `u64::MAX` (only
    /// reached by a status edited by hand; a TrafficShift keeps no earlier rollout that a number
    /// could be mistaken for). Until newuser34 a `+ 1` that panicked the controller there. Its
    /// record keeps the spec's target Deployment and `unreadyGrace`, which it acts on from then
    /// on ([`ShiftRecord::rolled_out`]).
    pub(super) fn start(
        config: crate::spec::RolloutConfig,
        shift: &TrafficShift,
        previous: Option<&ShiftRecord>,
    ) -> Machine {
        let generation = shift.metadata.generation.unwrap_or(1);
        let id = previous.map_or(1, |p| p.rollout.id.checked_add(1).unwrap_or(1));
        Machine::new(ShiftRecord {
            weights_generation: previous.map_or(0, |p| p.weights_generation),
            commands: previous.map_or_else(Default::default, |p| CommandsSeen {
                paused: None,
                ..p.commands.clone()
            }),
            annotation_problem: previous.and_then(|p| p.annotation_problem.clone()),
            deployment: Some(shift.spec.deployment.clone()),
            unready_grace_ms: Some(grace_ms(shift)),
            ..ShiftRecord::new(generation, Rollout::new(id, config, Slot::Blue))
        })
    }
}

/// A rollout started with no record in `shift`'s status carries on the numbers the status still
/// shows, if any: the weights generation (`status.weights.generation`) and the rollout id
/// (`status.rolloutId` + 1). A new TrafficShift shows neither. One whose `status.rolloutState`
/// another client removed does (session 38): before, its next rollout published weights from
/// generation 1 again, which every proxy that had applied a later one counted as applied at
/// once, and numbered itself rollout 1 again.
fn continue_numbering(record: &mut ShiftRecord, shift: &TrafficShift) {
    let Some(status) = shift.status.as_ref() else {
        return;
    };
    if let Some(weights) = &status.weights {
        record.weights_generation = record.weights_generation.max(weights.generation);
    }
    if let Some(id) = status.rollout_id {
        record.rollout.id = id.checked_add(1).unwrap_or(1);
    }
}

/// For a TrafficShift being deleted with no rollout record in its status while `status.weights`
/// still gives the preview a share (the record was removed by another client, after promotion
/// all of it), or with a record of a rollout that has ended (`previous`: completed, rolled back
/// or aborted, which leaves the preview 0%, so the share was written by another client): a
/// rollout standing where that split left it, at the first step whose weight reaches the share
/// (the last one if none does), so that the deletion aborts it as it aborts any rollout under
/// way: the share goes back to the target as weights published one generation above the
/// proxies' ([`continue_numbering`]), and the preview is deleted once every live proxy replica
/// applied them. Its policy and target Deployment are `previous`'s when there is one, else
/// `shift`'s spec's (`config`). Before (session 39 without a record, session 40 with an ended
/// one), the finalizer deleted the preview at once while the proxies still sent it that share.
/// `None` when `status.weights` gives the preview nothing.
pub(super) fn left_share_rollout(
    shift: &TrafficShift,
    config: RolloutConfig,
    previous: Option<&ShiftRecord>,
) -> Option<Machine> {
    let weights = left_share(shift)?;
    let share = weights.preview.bp();
    let config = previous.map_or(config, |p| p.rollout.config.clone());
    let mut machine = Machine::start(config, shift, previous);
    continue_numbering(&mut machine.record, shift);
    if let Some(previous) = previous {
        machine.record.deployment = Some(previous.target(shift).to_owned());
    }
    let r = &mut machine.record.rollout;
    let steps = r.config.steps.len();
    r.step = (0..steps)
        .find(|&i| r.config.weight_bp(i) >= share)
        .unwrap_or(steps.saturating_sub(1));
    r.phase = Phase::Progressing;
    r.preview_ready = true;
    (r.preview_bp, r.applied_bp, r.generation) = (share, share, weights.generation);
    Some(machine)
}

/// Whether `record`'s rollout has ended while `shift`'s `status.weights` still gives the preview
/// a share: every ended rollout leaves the preview 0%, and the record and the weights are written
/// together (one status write), so another client wrote that share.
pub(super) fn ended_with_share(record: &ShiftRecord, shift: &TrafficShift) -> bool {
    record.rollout.is_terminal() && left_share(shift).is_some()
}

/// `shift`'s `status.weights` when they give the preview a share (above 0%).
pub(super) fn left_share(shift: &TrafficShift) -> Option<&WeightsStatus> {
    let weights = shift.status.as_ref()?.weights.as_ref()?;
    (weights.preview.bp() > 0).then_some(weights)
}

/// `shift`'s `spec.rollout.unreadyGrace` (or the default) in milliseconds, as a record keeps it.
pub(super) fn grace_ms(shift: &TrafficShift) -> u64 {
    let grace = shift.spec.rollout.unready_grace().as_millis();
    u64::try_from(grace).unwrap_or(u64::MAX)
}

/// The machine for `shift` and the inputs to start this reconcile with: the one in memory, else
/// the one in status (reattached; `reload` when this process had it before), else a new
/// rollout; a newer spec generation supersedes it.
pub(super) fn load(
    in_memory: Option<Machine>,
    shift: &TrafficShift,
    config: RolloutConfig,
    reload: Option<Reload>,
) -> (Machine, Vec<Input>) {
    let generation = shift.metadata.generation.unwrap_or(1);
    let (machine, mut inputs) = match in_memory {
        Some(m) => (m, vec![Input::Tick]),
        None => match ShiftRecord::from_status(shift) {
            Some(record) => reattach(record, reload),
            None => {
                let mut machine = Machine::start(config, shift, None);
                continue_numbering(&mut machine.record, shift);
                return (machine, initial(None, 0));
            }
        },
    };
    if machine.record.generation == generation {
        return (machine, inputs);
    }
    // A new generation that changes neither the target Deployment, the images nor the rollout
    // policy (a `spec.route` edit, which the proxies read from the TrafficShift itself) is the
    // same rollout: it carries on where it is, and an ended one stays ended (trial 10, K12).
    if same_rollout(&machine.record, shift, &config) && machine.record.superseded_by.is_none() {
        let mut machine = machine;
        machine.record.generation = generation;
        machine.unsaved = true;
        return (machine, inputs);
    }
    let r = &machine.record.rollout;
    if r.is_terminal() {
        let next = Machine::start(config, shift, Some(&machine.record));
        return (next, initial(None, 0));
    }
    if matches!(
        r.phase,
        Phase::Provisioning | Phase::Progressing | Phase::Paused
    ) {
        inputs.push(Input::Abort(AbortCause::Superseded { generation }));
    }
    (machine, inputs)
}

/// The machine of the rollout `shift` had before its spec became invalid, when one of an earlier
/// generation is still running (not ended), with the inputs to start this reconcile with: before
/// promotion it is superseded ([`AbortCause::Superseded`], traffic back to the target), as by a
/// valid new spec; after promotion it finishes. [`Earlier::Ended`] with the machine in memory,
/// if any, when no such rollout runs: the invalid spec is then only shown (`InvalidSpec`). Without this, a rollout whose spec was edited into an
/// invalid one mid-rollout stood still at its weights, with no analysis, no progress deadline and
/// no operator command acted on (trial 34). `reload` as for [`load`].
pub(super) fn load_superseded(
    in_memory: Option<Machine>,
    shift: &TrafficShift,
    reload: Option<Reload>,
) -> Earlier {
    let generation = shift.metadata.generation.unwrap_or(1);
    let running =
        |record: &ShiftRecord| !record.rollout.is_terminal() && record.generation != generation;
    let (machine, mut inputs) = match in_memory {
        Some(m) if running(&m.record) => (m, vec![Input::Tick]),
        Some(m) => return Earlier::Ended(Some(m)),
        None => match ShiftRecord::from_status(shift).filter(running) {
            Some(record) => reattach(record, reload),
            None => return Earlier::Ended(None),
        },
    };
    let mut machine = machine;
    if matches!(
        machine.record.rollout.phase,
        Phase::Provisioning | Phase::Progressing | Phase::Paused
    ) {
        inputs.push(Input::Abort(AbortCause::Superseded { generation }));
        if machine.record.superseded_by != Some(generation) {
            machine.record.superseded_by = Some(generation);
            machine.unsaved = true;
        }
    }
    Earlier::Running(machine, inputs)
}

/// What [`load_superseded`] found.
pub(super) enum Earlier {
    /// A rollout of an earlier generation runs: its machine and the inputs to start with.
    Running(Machine, Vec<Input>),
    /// None runs; the machine that was in memory, if any, to keep.
    Ended(Option<Machine>),
}

/// Whether `record`'s rollout is the one `shift`'s spec asks for: the same target Deployment,
/// the same images and the same rollout policy (`config`, validated from `spec.rollout`, and
/// `unreadyGrace`), whatever else changed (`spec.route`). A record without its images (written
/// by an older version) is not; one without its `unreadyGrace` is compared on the rest.
pub(super) fn same_rollout(
    record: &ShiftRecord,
    shift: &TrafficShift,
    config: &RolloutConfig,
) -> bool {
    record.images.as_ref() == Some(&shift.spec.images)
        && record.rollout.config == *config
        && record.target(shift) == shift.spec.deployment
        && record
            .unready_grace_ms
            .is_none_or(|ms| ms == grace_ms(shift))
}

/// How `shift`'s rollout is promoted, for the words of its messages: the target Deployment takes
/// `shift`'s images and stays active, the preview Deployment is deleted ([`Promotion::InPlace`]).
/// `shift` should carry the images of the rollout ([`ShiftRecord::rolled_out`]).
pub(super) fn promotion_of(shift: &TrafficShift) -> Promotion {
    let images = &shift.spec.images;
    let images = match images.values().next() {
        Some(only) if images.len() == 1 => only.0.clone(),
        _ => shift.spec.images_text(),
    };
    Promotion::InPlace {
        target: shift.spec.deployment.clone(),
        preview: preview_name(shift),
        images,
    }
}

/// When to reconcile again: at the machine's next timer, or within `poll` ([`super::POLL`] unless
/// [`super::Context::polling_every`] set another) while waiting on the cluster (a rollback's
/// capacity wait included); terminal and paused rollouts wait for a change.
pub(super) fn next_action(m: &Machine, poll: Duration) -> Action {
    let r = &m.record.rollout;
    let now = tokio::time::Instant::now();
    let mut next = r.next_wakeup().map(|t| t.saturating_duration_since(now));
    // Provisioning (or paused before the preview was ready): the preview's availability.
    let provisioning =
        r.phase == Phase::Provisioning || (r.phase == Phase::Paused && !r.preview_ready);
    // A rollback holding traffic on the preview until the target can carry it: its ready
    // endpoints, read at each reconcile (no watch on EndpointSlices).
    let waiting = provisioning || m.swap_requested || m.stop_requested || r.holds_for_capacity();
    if waiting {
        next = Some(next.map_or(poll, |d| d.min(poll)));
    }
    // The proxies applying weights, or the retiring backend draining.
    if m.pending.is_some() || m.drain_deadline.is_some() {
        next = Some(next.map_or(ACK_POLL, |d| d.min(ACK_POLL)));
    }
    // The preview's grace without a ready pod: looked at when it ends (its Deployment's changes
    // wake the reconcile before that).
    // (Past it while blue has no ready pod either: blue's change wakes it.)
    if let Some((_, deadline)) = m.preview_unready.filter(|_| !m.both_unready) {
        let d = deadline.saturating_duration_since(now);
        next = Some(next.map_or(d, |n| n.min(d)));
    }
    if let Some(deadline) = m.drain_deadline {
        let d = deadline.saturating_duration_since(now);
        next = Some(next.map_or(d, |n| n.min(d)));
    }
    match next {
        Some(d) => requeue(d.max(Duration::from_millis(10))),
        None => Action::await_change(),
    }
}

/// Requeue `d` from now, at least a millisecond later.
fn requeue(d: Duration) -> Action {
    Action::requeue(d.max(Duration::from_millis(1)))
}

/// The machine of a rollout read from status (`record`) and the inputs it starts with
/// ([`initial`]): `reload` when this process had it before ([`Machine::reloaded`]).
pub(super) fn reattach(record: ShiftRecord, reload: Option<Reload>) -> (Machine, Vec<Input>) {
    let inputs = initial(Some((&record, reload.as_ref())), unix_ms_now());
    let mut machine = Machine::new(record);
    machine.reloaded = reload;
    machine.published_pending = machine.record.rollout.weights_pending;
    (machine, inputs)
}

/// The inputs a freshly loaded machine starts with: a rollout read from a record (reloaded by
/// this process, or loaded for the first time: `None`) resumes with what is left of its progress
/// deadline at `now_ms` (Unix time in milliseconds).
pub(super) fn initial(record: Option<(&ShiftRecord, Option<&Reload>)>, now_ms: u64) -> Vec<Input> {
    match record {
        Some((record, reload)) => {
            let deadline_left = record
                .deadline_at_ms
                .map(|at| Duration::from_millis(at.saturating_sub(now_ms)));
            let cause = reload.map_or(Reattach::Restart, Reload::cause);
            vec![
                Input::Reattached {
                    deadline_left,
                    cause,
                },
                Input::Tick,
            ]
        }
        None => vec![Input::Start],
    }
}

/// Unix time now, in milliseconds (0 on a clock before 1970).
pub(super) fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How far apart a deadline read back from a record ([`initial`]) and the one it was read from
/// may be and still be the same deadline: the monotonic clock and the wall clock are read at
/// different moments, and both in whole milliseconds.
const SAME_DEADLINE_MS: u64 = 1_000;

/// Keeps the rollout's progress deadline in its record as wall-clock time
/// ([`ShiftRecord::deadline_at_ms`]) whenever the machine set a new one (every transition that
/// sets one writes the record, which calls this first); true when the record's value changed.
/// One within [`SAME_DEADLINE_MS`] of the record's is the record's own read back after a reload:
/// kept as it is. Before (session 39) the few milliseconds between the clocks counted as a
/// change, and every reload wrote status.
pub(super) fn keep_deadline(m: &mut Machine, now: tokio::time::Instant, now_ms: u64) -> bool {
    let deadline = m.record.rollout.deadline();
    if deadline == m.deadline_kept {
        return false;
    }
    m.deadline_kept = deadline;
    let at = deadline.map(|d| {
        let left = u64::try_from(d.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX);
        now_ms.saturating_add(left)
    });
    let same = match (m.record.deadline_at_ms, at) {
        (Some(kept), Some(at)) => kept.abs_diff(at) <= SAME_DEADLINE_MS,
        (kept, at) => kept == at,
    };
    if !same {
        m.record.deadline_at_ms = at;
    }
    !same
}
