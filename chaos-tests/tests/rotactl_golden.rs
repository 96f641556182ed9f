//! Golden files: what every read command of `rotactl` prints, as a table
//! and as JSON (and YAML for `job get`), against a real cluster with a real
//! worker. What changes from run to run — ids, addresses, instants, ages,
//! epochs, which node leads — is replaced by placeholders; the rest must
//! match `tests/golden/*.txt` exactly.
//!
//! After a deliberate change of output, regenerate with
//! `ROTA_UPDATE_GOLDEN=1 cargo nextest run -p rota-chaos --test rotactl_golden`
//! and review the diff of `tests/golden/` before committing it.

use std::path::PathBuf;

use regex::Regex;
use rota_chaos::{Cluster, ServerSettings, WorkerSettings, output_text as text, rotactl};

const SPECS: &[(&str, &str)] = &[
    (
        "greet.yaml",
        "name: greet\ntask:\n  driver: exec\n  command: [sh, -c, 'echo hello']\n",
    ),
    (
        "broken.yaml",
        "name: broken\ntask:\n  driver: exec\n  command: [sh, -c, 'echo trying; exit 3']\nretry:\n  max_attempts: 2\n  backoff: 1s\n",
    ),
    (
        "nightly.yaml",
        "name: nightly\nschedule:\n  cron: '30 2 * * *'\n  timezone: Europe/Berlin\ntask:\n  driver: exec\n  command: [make, nightly]\n  resources: { memory: 512Mi }\ntimeout: 2h\n",
    ),
];

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Replaces what varies between runs with placeholders; table columns are
/// joined with ` | ` (so widths, which depend on ids, do not matter), and
/// the cells of relative-time columns become `<age>`.
fn normalize(output: &str, keep_times: bool) -> String {
    let mut rules = vec![
        (r"[0-9a-f]{32}-m?\d+", "<run-id>"),
        (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uid>"),
        (r"127\.0\.0\.1:\d+", "<addr>"),
        (r#""(epoch|revision)": \d+"#, r#""$1": <n>"#),
        (r"(?m)^revision: \d+$", "revision: <n>"),
        (r"epoch \d+", "epoch <n>"),
        (r"\b(leader|follower)\b", "<role>"),
        (r"\b\d+(s|m|h\d+m|d) ago\b", "<age> ago"),
        (
            r"ran \d+\.\ds, cpu \d+ ms, peak memory (\d+ KiB|not measured)",
            "ran <s>, cpu <ms>, peak memory <KiB>",
        ),
        // What the worker measured of a process varies from run to run.
        (r#""(cpu_time_ms|peak_memory_bytes)": \d+"#, r#""$1": <n>"#),
    ];
    if !keep_times {
        rules.push((
            r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})",
            "<time>",
        ));
    }
    let mut text = output.to_owned();
    for (pattern, with) in rules {
        let re = Regex::new(pattern).expect("valid pattern");
        text = re.replace_all(&text, with).into_owned();
    }
    let columns = Regex::new(r" {3,}").expect("valid pattern");
    // Inside a table: the columns holding relative times.
    let mut table: Option<Vec<usize>> = None;
    let mut lines = Vec::new();
    for line in text.lines() {
        let cells: Vec<&str> = columns.split(line).collect();
        let is_header = cells.len() > 1
            && cells
                .iter()
                .all(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_uppercase()));
        if is_header {
            table = Some(
                cells
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| matches!(**c, "AGE" | "REGISTERED" | "WHEN"))
                    .map(|(i, _)| i)
                    .collect(),
            );
            lines.push(cells.join(" | "));
        } else if let Some(relative) = table.as_ref().filter(|_| !line.is_empty()) {
            let cells: Vec<&str> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| if relative.contains(&i) { "<age>" } else { c })
                .collect();
            lines.push(cells.join(" | "));
        } else {
            table = None;
            lines.push(line.to_owned());
        }
    }
    lines.join("\n") + "\n"
}

#[test]
fn normalizing_keeps_structure_and_hides_what_varies() {
    let table = "ID                                     JOB     STATE     AGE    REASON\n\
                 2c308220e6cd4b979363ac550af6d731-m27   fail3   failed    5s     attempt_failed\n\
                 2c308220e6cd4b979363ac550af6d731-m3    fail3   running   2h3m\n\
                 \n\
                 after   the   table\n";
    assert_eq!(
        normalize(table, false),
        "ID | JOB | STATE | AGE | REASON\n\
         <run-id> | fail3 | failed | <age> | attempt_failed\n\
         <run-id> | fail3 | running | <age>\n\
         \n\
         after   the   table\n"
    );
    assert_eq!(
        normalize("created:   12s ago\nat 2026-11-28T20:40:33Z on 127.0.0.1:7401\n", false),
        "created:   <age> ago\nat <time> on <addr>\n"
    );
    assert_eq!(
        normalize("2027-03-28T03:00:00+02:00\n", true),
        "2027-03-28T03:00:00+02:00\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_commands_print_the_reviewed_tables_json_and_yaml() {
    let mut cluster = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    let mut worker = WorkerSettings::new("golden-worker", "exec");
    worker.labels = "pool=ci".into();
    cluster.start_worker(worker).expect("worker starts");
    let result: anyhow::Result<Vec<String>> = async {
        let servers = cluster.servers_arg();
        let dir = tempfile::tempdir()?;
        for (file, spec) in SPECS {
            std::fs::write(dir.path().join(file), spec)?;
        }
        let out = rotactl(&servers, &["apply", "-f", dir.path().to_str().unwrap_or_default()]).await?;
        anyhow::ensure!(out.status.success(), "{}", text(&out));
        let out = rotactl(&servers, &["job", "run", "greet", "--wait"]).await?;
        anyhow::ensure!(out.status.success(), "{}", text(&out));
        let out = rotactl(&servers, &["job", "run", "broken", "--wait"]).await?;
        anyhow::ensure!(out.status.code() == Some(3), "{}", text(&out));
        let out = rotactl(&servers, &["run", "list", "--job", "broken", "-o", "json"]).await?;
        let runs: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let broken = runs[0]["id"].as_str().unwrap_or_default().to_owned();

        let explain = [
            "job",
            "explain",
            "nightly",
            "--after",
            "2027-03-26T00:00:00Z",
            "--count",
            "4",
        ];
        let commands: Vec<(&str, Vec<&str>)> = vec![
            ("job-list", vec!["job", "list"]),
            ("job-list.json", vec!["job", "list", "-o", "json"]),
            ("job-get", vec!["job", "get", "nightly"]),
            ("job-get.json", vec!["job", "get", "nightly", "-o", "json"]),
            ("job-get.yaml", vec!["job", "get", "nightly", "-o", "yaml"]),
            ("job-explain", explain.to_vec()),
            ("job-explain.json", [&explain[..], &["-o", "json"]].concat()),
            ("run-list", vec!["run", "list", "--job", "broken"]),
            ("run-list.json", vec!["run", "list", "--job", "broken", "-o", "json"]),
            ("run-get", vec!["run", "get", &broken]),
            ("run-get.json", vec!["run", "get", &broken, "-o", "json"]),
            ("worker-list", vec!["worker", "list"]),
            ("worker-list.json", vec!["worker", "list", "-o", "json"]),
            ("cluster-members", vec!["cluster", "members"]),
            ("cluster-members.json", vec!["cluster", "members", "-o", "json"]),
        ];
        let update = std::env::var_os("ROTA_UPDATE_GOLDEN").is_some();
        let mut mismatches = Vec::new();
        for (name, args) in commands {
            let out = rotactl(&servers, &args).await?;
            anyhow::ensure!(out.status.success(), "rotactl {}: {}", args.join(" "), text(&out));
            let got = normalize(&String::from_utf8_lossy(&out.stdout), args.contains(&"explain"));
            let path = golden_dir().join(format!("{name}.txt"));
            if update {
                std::fs::write(&path, &got)?;
                continue;
            }
            let want = std::fs::read_to_string(&path).unwrap_or_default();
            if got != want {
                mismatches.push(format!(
                    "rotactl {} differs from {}:\n--- want\n{want}--- got\n{got}",
                    args.join(" "),
                    path.display()
                ));
            }
        }
        Ok(mismatches)
    }
    .await;
    match result {
        Ok(mismatches) if mismatches.is_empty() => {}
        Ok(mismatches) => panic!(
            "{}\n(after a deliberate change: ROTA_UPDATE_GOLDEN=1, then review tests/golden/)",
            mismatches.join("\n")
        ),
        Err(e) => {
            cluster.dump_logs();
            panic!("{e:#}");
        }
    }
}
