//! Judge simulation: replays synthetic blue/green request streams through the threshold judge (as
//! the runtime drives it), a fixed-horizon Mann–Whitney judge (Kayenta style) and the sequential
//! judge (with `fail_when_worse_than` both `blue` and `allowance`), and prints false-rollback rate, detection rate and time to a fail verdict.
//!
//! ```sh
//! cargo run --release -p crossfade-controller --example judge_sim -- --trials 1000
//! ```
//!
//! A second table ([`drift`]) runs rollouts of two steps, 10% and then 100%, where green at the
//! 100% step drifts within the allowances or breaks beyond them, through the sequential judge as
//! it was before it knew a step without blue traffic and as it is now.
//!
//! Options: `--trials N` (per cell, default 1000), `--seed S` (default 20261130), `--threads T`
//! (default: available parallelism), `--rates 10,100,1000` (total requests per second),
//! `--tables main,drift` (which tables, default both).
//! Same seed, same numbers. The model and the judges' settings are documented in
//! docs/judgement.md.

mod drift;
mod judges;
mod mann_whitney;
mod rng;
mod stream;

use judges::Outcome;
use stream::{Version, BLUE};

/// One regression case: green's version.
struct Case {
    name: &'static str,
    green: Version,
}

const CASES: [Case; 6] = [
    Case {
        name: "equal",
        green: BLUE,
    },
    Case {
        name: "errors +0.5pp",
        green: Version {
            error_rate: 0.010,
            p99: BLUE.p99,
        },
    },
    Case {
        name: "errors +1pp",
        green: Version {
            error_rate: 0.015,
            p99: BLUE.p99,
        },
    },
    Case {
        name: "errors +5pp",
        green: Version {
            error_rate: 0.055,
            p99: BLUE.p99,
        },
    },
    Case {
        name: "p99 +10%",
        green: Version {
            error_rate: BLUE.error_rate,
            p99: BLUE.p99 * 1.1,
        },
    },
    Case {
        name: "p99 +50%",
        green: Version {
            error_rate: BLUE.error_rate,
            p99: BLUE.p99 * 1.5,
        },
    },
];

struct Args {
    trials: u64,
    seed: u64,
    threads: usize,
    rates: Vec<f64>,
    tables: Vec<String>,
}

/// The 100% step's cases: green at the second step.
const DRIFT_CASES: [Case; 5] = [
    Case {
        name: "no drift",
        green: BLUE,
    },
    Case {
        name: "errors +0.5pp (within 1 pp)",
        green: Version {
            error_rate: 0.010,
            p99: BLUE.p99,
        },
    },
    Case {
        name: "p99 +10% (within 20%)",
        green: Version {
            error_rate: BLUE.error_rate,
            p99: BLUE.p99 * 1.1,
        },
    },
    Case {
        name: "errors +5pp (beyond)",
        green: Version {
            error_rate: 0.055,
            p99: BLUE.p99,
        },
    },
    Case {
        name: "p99 +50% (beyond)",
        green: Version {
            error_rate: BLUE.error_rate,
            p99: BLUE.p99 * 1.5,
        },
    },
];

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        trials: 1000,
        seed: 20_261_130,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        rates: vec![10.0, 100.0, 1000.0],
        tables: vec!["main".into(), "drift".into()],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |_| format!("{flag}: {value:?} is not a number");
        match flag.as_str() {
            "--trials" => args.trials = value.parse().map_err(bad)?,
            "--seed" => args.seed = value.parse().map_err(bad)?,
            "--threads" => args.threads = value.parse().map_err(bad)?,
            "--rates" => {
                args.rates = value
                    .split(',')
                    .map(|r| {
                        r.trim()
                            .parse()
                            .map_err(|_| format!("--rates: {r:?} is not a number"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--tables" => {
                args.tables = value.split(',').map(|t| t.trim().to_string()).collect();
                if let Some(t) = args
                    .tables
                    .iter()
                    .find(|t| !matches!(t.as_str(), "main" | "drift"))
                {
                    return Err(format!("--tables: {t:?} is neither main nor drift"));
                }
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("judge_sim: {e}");
            std::process::exit(2);
        }
    };
    // tokio's clock, as clippy.toml asks (no runtime needed to read it).
    let started = tokio::time::Instant::now();
    if args.tables.iter().any(|t| t == "main") {
        main_table(&args);
    }
    if args.tables.iter().any(|t| t == "drift") {
        drift_table(&args);
    }
    eprintln!("\njudge_sim: done in {:.0?}", started.elapsed());
}

/// The judges on one green version over the whole horizon.
fn main_table(args: &Args) {
    println!(
        "judge_sim: {} trials per cell, seed {}, horizon {} s, green weight {}%\n",
        args.trials,
        args.seed,
        judges::HORIZON,
        judges::GREEN_WEIGHT * 100.0
    );
    println!("| total req/s | green case | judge | rollback | median s to rollback | median green requests at rollback | pass by 600 s (median s) |");
    println!("|---:|---|---|---:|---:|---:|---:|");
    for (ri, &rate) in args.rates.iter().enumerate() {
        for (ci, case) in CASES.iter().enumerate() {
            let cell_seed = args.seed ^ ((ri as u64) << 40) ^ ((ci as u64) << 32);
            let trials = run_cell(args, cell_seed, |seed| {
                judges::trial(rate, case.green, seed)
            });
            for (ji, name) in judges::NAMES.iter().enumerate() {
                let outcomes: Vec<&Outcome> = trials.iter().map(|t| &t.0[ji]).collect();
                println!("| {rate} | {} | {name} | {} |", case.name, row(&outcomes));
            }
        }
    }
}

/// The 100% step: rollbacks at each step and passes at the second, per judge.
fn drift_table(args: &Args) {
    println!(
        "\njudge_sim drift: {} trials per cell, seed {}, green at 10% for {s} s then at 100% for {s} s\n",
        args.trials,
        args.seed,
        s = drift::STEP
    );
    println!("| total req/s | green at 100% | judge | rollback at 10% | rollback at 100% | median s into 100% to rollback | a pass at 100% before any fail |");
    println!("|---:|---|---|---:|---:|---:|---:|");
    for (ri, &rate) in args.rates.iter().enumerate() {
        for (ci, case) in DRIFT_CASES.iter().enumerate() {
            let cell_seed = args.seed ^ ((ri as u64) << 40) ^ ((ci as u64) << 32) ^ (1 << 60);
            let trials = run_cell(args, cell_seed, |seed| drift::trial(rate, case.green, seed));
            let n = trials.len() as f64;
            let pct = |k: usize| format!("{:.1}%", 100.0 * k as f64 / n);
            for (ji, name) in drift::NAMES.iter().enumerate() {
                let o: Vec<drift::Outcome> = trials.iter().map(|t| t.0[ji]).collect();
                let early = o
                    .iter()
                    .filter(|o| o.rollback.is_some_and(|t| t <= drift::STEP));
                let late: Vec<f64> = o
                    .iter()
                    .filter_map(|o| o.rollback.filter(|&t| t > drift::STEP))
                    .map(|t| f64::from(t - drift::STEP))
                    .collect();
                let passed = o.iter().filter(|o| o.passed_at_full).count();
                println!(
                    "| {rate} | {} | {name} | {} | {} | {} | {} |",
                    case.name,
                    pct(early.count()),
                    pct(late.len()),
                    median(&late),
                    pct(passed)
                );
            }
        }
    }
}

/// Runs `args.trials` trials of one cell over `args.threads` threads: `trial(seed)` for each.
fn run_cell<T: Send>(args: &Args, seed: u64, trial: impl Fn(u64) -> T + Sync) -> Vec<T> {
    let threads = args.threads.max(1) as u64;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let trial = &trial;
                s.spawn(move || {
                    (t..args.trials)
                        .step_by(threads as usize)
                        .map(|i| trial(seed.wrapping_add(i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a trial thread panicked"))
            .collect()
    })
}

/// `1.2% (3 by inconclusive limit) | 42 | 410 | 88% (101)`.
fn row(outcomes: &[&Outcome]) -> String {
    let n = outcomes.len() as f64;
    let rolled: Vec<&&Outcome> = outcomes.iter().filter(|o| o.rollback.is_some()).collect();
    let by_limit = rolled.iter().filter(|o| o.by_limit).count();
    let mut rate = format!("{:.1}%", 100.0 * rolled.len() as f64 / n);
    if by_limit > 0 {
        rate.push_str(&format!(" ({by_limit} by inconclusive limit)"));
    }
    let times: Vec<f64> = rolled.iter().filter_map(|o| o.rollback).collect();
    let reqs: Vec<f64> = rolled.iter().map(|o| o.green_requests as f64).collect();
    let passes: Vec<f64> = outcomes.iter().filter_map(|o| o.first_pass).collect();
    let pass = if passes.is_empty() {
        "-".to_string()
    } else {
        format!(
            "{:.1}% ({})",
            100.0 * passes.len() as f64 / n,
            median(&passes)
        )
    };
    format!("{rate} | {} | {} | {pass}", median(&times), median(&reqs))
}

fn median(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let m = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    format!("{m:.0}")
}
