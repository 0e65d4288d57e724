//! The words of promotion, per [`Promotion`]: which version runs where from `Promoted` on.

use super::machine::human;
use super::{Promotion, Rollout};

impl Rollout {
    /// The `Promoted` event's note: `green promoted after analysis: swapping roles`, or in place
    /// `green promoted after analysis: web takes crossfade-sample:v2, then all traffic goes back to it`.
    pub(super) fn promoted_note(&self, how: &str) -> String {
        let preview = self.preview();
        match &self.promotion {
            Promotion::Swap => format!("{preview} promoted {how}: swapping roles"),
            Promotion::InPlace { target, images, .. } => format!(
                "{preview} promoted {how}: {target} takes {images}, then all traffic goes back to it"
            ),
        }
    }

    /// The `Retiring` event's note: the new active and what is drained, within `drain`.
    pub(super) fn retiring_note(&self) -> String {
        let drain = human(self.config.drain_timeout);
        let what = "in-flight requests and upgraded connections";
        match &self.promotion {
            Promotion::Swap => format!(
                "{} is active; draining {}'s {what} (up to {drain})",
                self.preview(),
                self.active
            ),
            Promotion::InPlace {
                target,
                preview,
                images,
            } => format!(
                "{target} runs {images} (active); draining preview {preview}'s {what} (up to {drain})"
            ),
        }
    }

    /// The `ActiveDrained` event's note: what drained and is stopped next.
    pub(super) fn drained_note(&self) -> String {
        match &self.promotion {
            Promotion::Swap if self.active_left_running => format!(
                "{} drained; leaving it running (static endpoints)",
                self.active
            ),
            Promotion::Swap => format!("{} drained; stopping it", self.active),
            Promotion::InPlace { preview, .. } => format!("preview {preview} drained; deleting it"),
        }
    }

    /// The outcome of a completed rollout, after `rollout completed: ` (event) or `completed: `
    /// (message); `old` is the slot that was active before.
    pub(super) fn completed_words(&self, stopped: Option<crossfade_proxy::weight::Slot>) -> String {
        match (&self.promotion, stopped) {
            (Promotion::Swap, Some(old)) if self.active_left_running => format!(
                "{} is active, {old} left running (static endpoints)",
                self.active
            ),
            (Promotion::Swap, Some(old)) => format!("{} is active, {old} stopped", self.active),
            (Promotion::Swap, None) => format!("{} is active", self.active),
            (
                Promotion::InPlace {
                    target,
                    preview,
                    images,
                },
                _,
            ) => format!("{target} runs {images} (active), preview {preview} deleted"),
        }
    }

    /// The situation while `Promoted`: the roles are being swapped.
    pub(super) fn promoted_situation(&self) -> String {
        match &self.promotion {
            Promotion::Swap => format!("promoted {}: swapping roles", self.preview()),
            Promotion::InPlace {
                target,
                preview,
                images,
            } => format!("promoted: {target} is rolling out {images}; {preview} serves meanwhile"),
        }
    }

    /// The situation while `Retiring`: the new active, and the old backend draining or stopping.
    pub(super) fn retiring_situation(&self) -> String {
        let preview_slot = self.preview();
        match (&self.promotion, self.active_drained) {
            (Promotion::Swap, true) if self.active_left_running => {
                format!("{preview_slot} is active; {} drained", self.active)
            }
            (Promotion::Swap, true) => {
                format!("{preview_slot} is active; stopping {}", self.active)
            }
            (Promotion::Swap, false) if self.retire_held => format!(
                "{preview_slot} is active; {} drained and is kept running as its backup: \
                 {preview_slot} has no instance that can serve",
                self.active
            ),
            (Promotion::Swap, false) => {
                format!("{preview_slot} is active; draining {}", self.active)
            }
            (
                Promotion::InPlace {
                    target,
                    preview,
                    images,
                },
                drained,
            ) => {
                let doing = match drained {
                    true => "deleting",
                    false if self.retire_held => {
                        return format!(
                            "{target} runs {images} (active) but has no ready endpoint; preview \
                             {preview} drained and is kept as the route's backup until {target} \
                             has one"
                        )
                    }
                    false => "draining",
                };
                format!("{target} runs {images} (active); {doing} preview {preview}")
            }
        }
    }

    /// Why `command` is refused once promoted (`Promoted`, `Retiring`): nothing is left to
    /// abort or pause; the way back is a new rollout of the previous version.
    pub(super) fn too_late_promoted(&self, command: &str) -> String {
        let preview = self.preview();
        let (promoted, retired, back) = match &self.promotion {
            Promotion::Swap => (
                format!("{preview} is already promoted and the roles are swapped"),
                format!("{} is retired", self.active),
                "roll the previous version out again (`crossfade migrate`)",
            ),
            Promotion::InPlace {
                target,
                preview: deployment,
                images,
            } => (
                format!("{preview} is already promoted and {target} takes {images}"),
                format!("preview {deployment} is deleted"),
                "roll the previous image out again (annotation crossfade.dev/image)",
            ),
        };
        if command == "abort" || command == "force-abort" {
            format!(
                "too late: {promoted}, nothing to abort; once this rollout has completed, {back} to go back"
            )
        } else {
            format!("too late: {promoted}; the rollout completes by itself once {retired}")
        }
    }
}
