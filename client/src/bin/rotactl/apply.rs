//! `rotactl apply`: create or update jobs from spec files, with the diff of
//! each change, and prune what the files do not define.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use rota_client::{Consistency, SpecFile, proto as pb};

use crate::cli::ApplyArgs;
use crate::{Session, output};

/// Applies `args.path`.
pub async fn apply(session: &Session, args: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let client = &session.client;
    let specs = SpecFile::load(&args.path)?;
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for (file, spec) in &specs {
        if let Some(first) = seen.insert(spec.name.clone(), file.clone()) {
            anyhow::bail!(
                "job {:?} is defined twice, in {} and in {}; nothing was applied",
                spec.name,
                first.display(),
                file.display()
            );
        }
    }
    let suffix = if args.dry_run { " (dry run)" } else { "" };
    let color = std::io::stdout().is_terminal();
    let mut failures = 0;
    for (file, spec) in &specs {
        match client.apply_job(spec.to_proto(), args.dry_run).await {
            Ok(applied) => {
                let word = match applied.outcome {
                    pb::ApplyOutcome::Created => "created".to_owned(),
                    pb::ApplyOutcome::Updated => format!("configured (generation {})", applied.job.generation),
                    pb::ApplyOutcome::Unchanged | pb::ApplyOutcome::Unspecified => "unchanged".to_owned(),
                };
                println!("job/{} {word}{suffix}", applied.job.name);
                if let (pb::ApplyOutcome::Updated, Some(previous)) = (applied.outcome, &applied.previous) {
                    print!("{}", output::spec_diff(previous, &applied.job, color));
                }
            }
            Err(rota_client::Error::InvalidArgument { violations, .. }) if !violations.is_empty() => {
                failures += 1;
                eprintln!("error: {}: job/{}: invalid job spec:", file.display(), spec.name);
                for v in violations {
                    eprintln!("  {}: {}", v.field, v.description);
                }
            }
            Err(e @ rota_client::Error::Unreachable { .. }) => return Err(session.explain(e)),
            Err(e) => {
                failures += 1;
                eprintln!("error: {}: job/{}: {e}", file.display(), spec.name);
            }
        }
    }
    if failures > 0 {
        let pruning = if args.prune { "; nothing was pruned" } else { "" };
        anyhow::bail!("{failures} spec(s) not applied{pruning}");
    }
    if args.prune {
        for job in client.list_jobs(Consistency::Linearizable).await? {
            if seen.contains_key(&job.name) {
                continue;
            }
            if !args.dry_run {
                match client.delete_job_if_uid(&job.name, &job.uid).await {
                    // Gone already, or re-created since the listing: not ours to prune.
                    Ok(_) | Err(rota_client::Error::NotFound(_)) => {}
                    Err(rota_client::Error::FailedPrecondition(_)) => {
                        eprintln!("job/{} was re-created meanwhile; not pruned", job.name);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            println!("job/{} pruned{suffix}", job.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}
