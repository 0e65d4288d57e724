//! One trial: one stream of traffic judged by every judge at once.

use crossfade_controller::analysis::{
    Judge, Outcome as Verdict, SequentialJudge, ThresholdJudge, Window,
};
use crossfade_controller::spec::{AnalysisConfig, FailWhenWorseThan, JudgeKind};

use crate::mann_whitney::{self, Series};
use crate::rng::Rng;
use crate::stream::{add, Backend, Version, BLUE};

/// How long a trial watches, in seconds (the "10 minutes" of BASELINE.md).
pub const HORIZON: u32 = 600;

/// Green's share of the traffic.
pub const GREEN_WEIGHT: f64 = 0.1;

/// The threshold judge's analysis interval: the default hold (10 s).
const THRESHOLD_INTERVAL: u32 = 10;

/// The judges, in the order of [`Trial`]'s outcomes.
pub const NAMES: [&str; 5] = [
    "threshold, 10 s windows",
    "Mann-Whitney 5 × 1 min, at 300 s",
    "Mann-Whitney 60 × 10 s, at 600 s",
    "sequential, looks every 1 s",
    "sequential, fail beyond allowance",
];

/// What one judge did in one trial.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// When it rolled back (s), if it did.
    pub rollback: Option<f64>,
    /// Whether the rollback came from the inconclusive limit rather than a fail verdict.
    pub by_limit: bool,
    /// Green's requests seen by the rollback.
    pub green_requests: u64,
    /// When it first passed (s), if it did.
    pub first_pass: Option<f64>,
}

/// Every judge's outcome on one stream.
pub struct Trial(pub [Outcome; 5]);

/// The threshold judge driven as the runtime drives it: a window every interval, kept open while
/// inconclusive, `max_inconclusive` inconclusive looks in a row roll back.
struct ThresholdRun {
    judge: ThresholdJudge,
    start: (Window, Window),
    streak: u32,
}

/// Runs one trial at `rate` total requests per second with green behaving as `green`.
pub fn trial(rate: f64, green: Version, seed: u64) -> Trial {
    let mut rng = Rng::new(seed);
    let g = Backend::new(rate * GREEN_WEIGHT, green);
    let b = Backend::new(rate * (1.0 - GREEN_WEIGHT), BLUE);
    let sequential = SequentialJudge::new(AnalysisConfig {
        judge: JudgeKind::Sequential,
        ..AnalysisConfig::default()
    });
    let beyond = SequentialJudge::new(AnalysisConfig {
        judge: JudgeKind::Sequential,
        fail_when_worse_than: FailWhenWorseThan::Allowance,
        ..AnalysisConfig::default()
    });
    let mut threshold = ThresholdRun {
        judge: ThresholdJudge::new(AnalysisConfig {
            max_p99_ratio: Some(1.2),
            ..AnalysisConfig::default()
        }),
        start: Default::default(),
        streak: 0,
    };
    let mut out: [Outcome; 5] = Default::default();
    let (mut gw, mut bw) = (Window::default(), Window::default());
    let (mut g10, mut b10) = (Window::default(), Window::default());
    let (mut g_series, mut b_series) = (Vec::new(), Vec::new());
    for t in 1..=HORIZON {
        let gs = g.tick(&mut rng, &mut gw);
        let bs = b.tick(&mut rng, &mut bw);
        add(&mut g10, &gs);
        add(&mut b10, &bs);
        let now = f64::from(t);
        if out[3].rollback.is_none() {
            look(
                &mut out[3],
                &sequential.judge(&gw, &bw),
                now,
                gw.requests,
                false,
            );
        }
        if out[4].rollback.is_none() {
            look(
                &mut out[4],
                &beyond.judge(&gw, &bw),
                now,
                gw.requests,
                false,
            );
        }
        if t % THRESHOLD_INTERVAL == 0 {
            g_series.push(std::mem::take(&mut g10));
            b_series.push(std::mem::take(&mut b10));
            if out[0].rollback.is_none() {
                threshold.look(&mut out[0], &gw, &bw, now);
            }
        }
        if t == 300 {
            let fail = mann_whitney::fails(&minutes(&g_series), &minutes(&b_series));
            look_fixed(&mut out[1], fail, now, gw.requests);
        }
    }
    let fail = mann_whitney::fails(&points(&g_series), &points(&b_series));
    look_fixed(&mut out[2], fail, f64::from(HORIZON), gw.requests);
    Trial(out)
}

fn look(
    o: &mut Outcome,
    verdict: &crossfade_controller::analysis::Verdict,
    now: f64,
    green: u64,
    limit: bool,
) {
    match verdict.outcome {
        Verdict::Fail => {
            o.rollback = Some(now);
            o.green_requests = green;
            o.by_limit = limit;
        }
        Verdict::Pass if o.first_pass.is_none() => o.first_pass = Some(now),
        _ => {}
    }
}

fn look_fixed(o: &mut Outcome, fail: bool, now: f64, green: u64) {
    if fail {
        o.rollback = Some(now);
        o.green_requests = green;
    } else {
        o.first_pass = Some(now);
    }
}

impl ThresholdRun {
    fn look(&mut self, o: &mut Outcome, g: &Window, b: &Window, now: f64) {
        let v = self
            .judge
            .judge(&g.since(&self.start.0), &b.since(&self.start.1));
        look(o, &v, now, g.requests, false);
        if v.outcome == Verdict::Inconclusive {
            self.streak += 1;
            if self.streak >= self.judge.config().max_inconclusive {
                o.rollback = Some(now);
                o.green_requests = g.requests;
                o.by_limit = true;
            }
        } else {
            self.streak = 0;
            self.start = (g.clone(), b.clone());
        }
    }
}

/// One Mann–Whitney series from 10-s windows.
fn points(windows: &[Window]) -> Series {
    let mut s = Series::default();
    for w in windows {
        s.push(w);
    }
    s
}

/// The first five minutes as 1-min windows.
fn minutes(windows: &[Window]) -> Series {
    let mut s = Series::default();
    for chunk in windows.chunks(6).take(5) {
        let mut w = Window::default();
        for x in chunk {
            add(&mut w, x);
        }
        s.push(&w);
    }
    s
}
