//! Calling webhook gates: one POST per gate configured at a point, in spec order, until one refuses
//! (see [`crate::spec::gates`] for the configuration and the body's fields).

use bytes::Bytes;
use http::Method;
use serde::Serialize;

use crate::fetch;
use crate::headers::Values;
use crate::rollout::GateAnswer;
use crate::spec::{GateConfig, GatePoint};

/// The rollout context POSTed to a gate, as JSON.
#[derive(Clone, Debug, Serialize)]
pub struct GateContext {
    /// The route being rolled out.
    pub route: String,
    /// The rollout's id.
    pub rollout: u64,
    /// The rollout's phase when the gate was asked (`Pending`, `Progressing`, `Completed`).
    pub phase: String,
    /// The step asked for, counted from 1 (for `before_step`, the step about to start).
    pub step: usize,
    /// The number of steps.
    pub steps: usize,
    /// The preview's weight at that step, in basis points (0..=10000).
    pub preview_weight_bp: u32,
    /// The preview's backend name (`green` or `blue`).
    pub preview: String,
    /// The active backend's name.
    pub active: String,
    /// The preview workload's `name:` (its backend name when unset).
    pub preview_version: String,
    /// The active workload's `name:` (its backend name when unset).
    pub active_version: String,
}

#[derive(Serialize)]
struct Body<'a> {
    gate: &'a str,
    at: GatePoint,
    #[serde(flatten)]
    context: &'a GateContext,
}

/// Asks every gate of `gates` configured at `at`, in order, and stops at the first refusal: a
/// non-2xx status, a timeout, a transport failure, or a `headers_from` value that cannot be read
/// through `values` (read before each call, so a rotated token is sent at the next one).
pub async fn ask(
    gates: &[GateConfig],
    at: GatePoint,
    context: &GateContext,
    values: &dyn Values,
) -> GateAnswer {
    let mut approved = Vec::new();
    for (i, gate) in gates.iter().enumerate().filter(|(_, g)| g.at == at) {
        let body = Body {
            gate: &gate.name,
            at,
            context,
        };
        let body = match serde_json::to_vec(&body) {
            Ok(b) => Bytes::from(b),
            Err(e) => return refused(gate, format!("cannot encode the request: {e}")),
        };
        let path = format!("rollout.gates[{i}]");
        let headers =
            match crate::headers::resolve(values, &path, &gate.headers, &gate.headers_from).await {
                Ok(h) => h,
                Err(e) => return refused(gate, e),
            };
        let reply = fetch::send(Method::POST, &gate.url, &headers, Some(body), gate.timeout).await;
        match reply {
            Ok(r) if r.status.is_success() => {
                approved.push(format!(
                    "gate {} approved (status {})",
                    gate.name,
                    r.status.as_u16()
                ));
            }
            Ok(r) => return refused(gate, r.refusal()),
            Err(e) => return refused(gate, e),
        }
    }
    GateAnswer::Approved {
        note: if approved.is_empty() {
            "no gate configured".into()
        } else {
            approved.join(", ")
        },
    }
}

fn refused(gate: &GateConfig, reason: String) -> GateAnswer {
    GateAnswer::Refused {
        gate: gate.name.clone(),
        reason,
        policy: gate.on_reject,
    }
}
