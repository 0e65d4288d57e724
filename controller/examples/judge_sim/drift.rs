//! The 100% step: a rollout of two steps, green at 10% for [`STEP`] seconds and then at 100% for
//! as long, where blue takes no traffic. At the second step green behaves as the case says: the
//! same as blue, a drift within the allowances (the service slowing or failing more for a reason
//! of its own, which blue would show too were it serving), or a green that breaks beyond them.
//! The sequential judge is run as it was before it knew a step without blue traffic (every look
//! judged as if blue's counts were current) and as it is now ([`judge_at`] with the applied
//! weight), with `fail_when_worse_than` both `blue` and `allowance`.

use crossfade_controller::analysis::{
    judge_at, Judge, Outcome as Verdict, SequentialJudge, Window,
};
use crossfade_controller::spec::{AnalysisConfig, FailWhenWorseThan, JudgeKind};

use crate::rng::Rng;
use crate::stream::{Backend, Version, BLUE};

/// Each step's length, in seconds.
pub const STEP: u32 = 300;

/// The judges, in the order of [`Trial`]'s outcomes.
pub const NAMES: [&str; 3] = [
    "sequential, before (blue's old counts taken as current)",
    "sequential, now (blue at 0%: worse and beyond the allowance)",
    "sequential allowance, now",
];

/// What one judge did in one trial.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    /// When it failed green (s from the rollout's start), if it did.
    pub rollback: Option<u32>,
    /// Whether it passed at the 100% step before any fail.
    pub passed_at_full: bool,
}

/// Every judge's outcome on one stream.
pub struct Trial(pub [Outcome; 3]);

/// One trial at `rate` total requests per second; green is blue at the first step and
/// `at_full` at the second.
pub fn trial(rate: f64, at_full: Version, seed: u64) -> Trial {
    let mut rng = Rng::new(seed);
    let config = |fail_when| AnalysisConfig {
        judge: JudgeKind::Sequential,
        fail_when_worse_than: fail_when,
        ..AnalysisConfig::default()
    };
    let default = SequentialJudge::new(config(FailWhenWorseThan::Blue));
    let beyond = SequentialJudge::new(config(FailWhenWorseThan::Allowance));
    let judges: [(&SequentialJudge, bool); 3] =
        [(&default, false), (&default, true), (&beyond, true)];
    let first = (
        Backend::new(rate * 0.1, BLUE),
        Backend::new(rate * 0.9, BLUE),
    );
    let full = Backend::new(rate, at_full);
    let mut out = [Outcome::default(); 3];
    let (mut gw, mut bw) = (Window::default(), Window::default());
    for t in 1..=2 * STEP {
        let preview_bp = if t <= STEP {
            first.0.tick(&mut rng, &mut gw);
            first.1.tick(&mut rng, &mut bw);
            1_000
        } else {
            full.tick(&mut rng, &mut gw);
            10_000
        };
        for (o, &(judge, knows)) in out.iter_mut().zip(&judges) {
            if o.rollback.is_some() {
                continue;
            }
            let v = if knows {
                judge_at(judge as &(dyn Judge + Send + Sync), preview_bp, &gw, &bw)
            } else {
                judge.judge(&gw, &bw)
            };
            match v.outcome {
                Verdict::Fail => o.rollback = Some(t),
                Verdict::Pass if t > STEP => o.passed_at_full = true,
                _ => {}
            }
        }
    }
    Trial(out)
}
