//! `rota-chaos`: the chaos scenarios of issue 6 outside the test harness.
//!
//! - `rota-chaos` runs every scenario once (the CI profile; the tests in
//!   `tests/guarantees.rs` do the same one test per scenario);
//! - `rota-chaos --soak 1h` runs random scenarios with random seeds until
//!   the time is up (the soak profile);
//! - `rota-chaos --scenario NAME --seed N` repeats one run exactly.
//!
//! It stops at the first violation, prints its account with the scenario
//! and seed, and exits 1. Build the binaries first (`cargo build --workspace
//! --bins`); they are found next to this one or in `$ROTA_BIN_DIR`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rand::Rng;
use rand::seq::IndexedRandom;
use rota_chaos::scenarios::{Scenario, run};

#[derive(Parser)]
#[command(version, about = "Runs rota's chaos scenarios (issue 6) against the real binaries")]
struct Args {
    /// Run random scenarios with random seeds for this long (e.g. 1h, 30m).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "seed")]
    soak: Option<Duration>,
    /// Only these scenarios (repeatable; see --list).
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// The seed (one run of each chosen scenario with it).
    #[arg(long)]
    seed: Option<u64>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
}

fn chosen(names: &[String]) -> anyhow::Result<Vec<Scenario>> {
    if names.is_empty() {
        return Ok(Scenario::ALL.to_vec());
    }
    names
        .iter()
        .map(|name| {
            Scenario::from_name(name)
                .with_context(|| format!("--scenario: no scenario {name:?}; `rota-chaos --list` lists them"))
        })
        .collect()
}

/// Runs one scenario and prints how it went; `Err` on a violation.
async fn one(scenario: Scenario, seed: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    println!("{}: seed {seed} ...", scenario.name());
    let ran = run(scenario, seed).await?;
    let how = if ran { "passed" } else { "skipped (no Docker)" };
    println!("{}: {how} in {:.0?}", scenario.name(), started.elapsed());
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match chaos(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rota-chaos: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn chaos(args: Args) -> anyhow::Result<()> {
    if args.list {
        for scenario in Scenario::ALL {
            println!("{}", scenario.name());
        }
        return Ok(());
    }
    let scenarios = chosen(&args.scenarios)?;
    let Some(soak) = args.soak else {
        for scenario in scenarios {
            one(scenario, args.seed.unwrap_or_else(rand::random)).await?;
        }
        return Ok(());
    };
    let deadline = Instant::now() + soak;
    let mut rng = rand::rng();
    let mut runs = 0u32;
    while Instant::now() < deadline {
        let Some(&scenario) = scenarios.choose(&mut rng) else {
            bail!("no scenario chosen");
        };
        one(scenario, rng.random()).await?;
        runs += 1;
    }
    println!("soak: {runs} scenario runs in {soak:?}, no violation");
    Ok(())
}
