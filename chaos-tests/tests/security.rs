//! Issue 10, attacks from outside on a cluster with mutual TLS and tokens
//! (three real servers, a real worker): plain-text connections, a
//! certificate of another CA, an expired certificate, a worker certificate
//! calling Raft and admin methods, a missing token, a viewer writing, a
//! worker token reading jobs, a revoked token — each refused with the
//! right code and an audit line in the server's log. Then what must still
//! work: Raft between servers, a worker registering and running a job, a
//! certificate change picked up without a restart.

use std::time::Duration;

use rota_chaos::{Cluster, Security, ServerSettings, WorkerSettings, run_checked, run_to_end, wait_for};
use rota_client::certs::{Authority, Validity};
use rota_client::proto as pb;
use rota_client::tls::{Connector, Role, Tls};
use rota_client::{Client, ClientOptions, Consistency, Error, TlsFiles};
use tonic::Code;

/// Writes `pem` as a certificate/key pair named `name` in `dir`, with `ca`
/// as the CA file.
fn write_pair(dir: &std::path::Path, name: &str, ca: &std::path::Path, pem: &rota_client::certs::Pem) -> TlsFiles {
    let files = TlsFiles {
        ca_file: ca.to_owned(),
        cert_file: dir.join(format!("{name}.pem")),
        key_file: dir.join(format!("{name}-key.pem")),
    };
    std::fs::write(&files.cert_file, &pem.cert).expect("write cert");
    std::fs::write(&files.key_file, &pem.key).expect("write key");
    files
}

/// The gRPC code of a failed call, and its message.
fn code_of(error: &Error) -> (Option<Code>, String) {
    (error.code(), error.to_string())
}

/// Waits until server `id`'s log holds an audit line containing every one
/// of `needles`.
async fn audit_line(cluster: &Cluster, needles: &[&str]) -> anyhow::Result<String> {
    wait_for(
        &format!("an audit line with {needles:?}"),
        Duration::from_secs(20),
        || async {
            for id in cluster.ids() {
                let log = cluster.server_log(id).map_err(|e| e.to_string())?;
                if let Some(line) = log
                    .lines()
                    .find(|line| line.contains("audit") && needles.iter().all(|n| line.contains(n)))
                {
                    eprintln!("server {id}: {line}");
                    return Ok(Some(line.to_owned()));
                }
            }
            Ok(None)
        },
    )
    .await
}

fn options(tls: TlsFiles, token: Option<&str>) -> ClientOptions {
    ClientOptions {
        tls: Some(tls),
        token: token.map(str::to_owned),
        max_attempts: 2,
        timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_and_tokens_refuse_every_impostor_and_audit_it() {
    let creds = tempfile::tempdir().expect("temp dir");
    let security = Security::create(creds.path()).expect("credentials");
    let mut cluster = Cluster::start(
        3,
        ServerSettings {
            security: Some(security.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("a cluster forms over mutual TLS");
    run_checked(&mut cluster, async |cluster| {
        let servers: Vec<String> = cluster
            .ids()
            .iter()
            .map(|&id| cluster.addr(id))
            .collect::<Result<_, _>>()?;
        let admin = cluster.client()?;
        let client_files = security.files(Role::Client);

        // Plain text on a TLS port: the handshake fails, nothing is served.
        let plain = Client::with_options(
            &servers,
            ClientOptions {
                max_attempts: 1,
                timeout: Duration::from_secs(5),
                token: Some(security.bootstrap_token.clone()),
                ..Default::default()
            },
        )?;
        // The client sees a broken connection or an HTTP/2 error, depending
        // on when the server hangs up; either way nothing is served.
        let refused = plain
            .list_jobs(Consistency::Linearizable)
            .await
            .expect_err("plain text");
        anyhow::ensure!(
            matches!(
                refused,
                Error::Unreachable { .. }
                    | Error::Unavailable(_)
                    | Error::Other {
                        code: Code::Internal,
                        ..
                    }
            ),
            "plain text: {refused:?}"
        );
        audit_line(cluster, &["TLS handshake refused"]).await?;

        // A certificate of another CA, and an expired one of the right CA.
        let forged_ca = Authority::new("forged", Validity::from_now(Duration::from_secs(3600)))?;
        let forged_ca_file = creds.path().join("forged-ca.pem");
        std::fs::write(&forged_ca_file, &forged_ca.pem.cert)?;
        let forged = forged_ca.issue(Role::Client, &[], Validity::from_now(Duration::from_secs(3600)))?;
        let forged = write_pair(creds.path(), "forged-client", &client_files.ca_file, &forged);
        let expired_validity = Validity {
            not_before: time::OffsetDateTime::now_utc() - time::Duration::days(10),
            not_after: time::OffsetDateTime::now_utc() - time::Duration::days(1),
        };
        let expired = security.authority.issue(Role::Client, &[], expired_validity)?;
        let expired = write_pair(creds.path(), "expired-client", &client_files.ca_file, &expired);
        for (what, files, reason) in [
            ("a certificate of another CA", forged, "UnknownIssuer"),
            ("an expired certificate", expired, "certificate expired"),
        ] {
            let client = Client::with_options(&servers, options(files, Some(&security.bootstrap_token)))?;
            let refused = client.list_jobs(Consistency::Linearizable).await.expect_err(what);
            anyhow::ensure!(
                matches!(refused, Error::Unreachable { .. } | Error::Unavailable(_)),
                "{what}: {refused:?}"
            );
            audit_line(cluster, &["TLS handshake refused", reason]).await?;
        }

        // A worker certificate calling Raft and an admin method.
        let worker_tls = Tls::load(security.files(Role::Worker), Role::Worker)?;
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", servers[0]))?;
        let channel = Connector::new(Some(&worker_tls)).connect(endpoint).await?;
        let vote = pb::raft_service_client::RaftServiceClient::new(channel.clone())
            .vote(pb::RaftPayload::default())
            .await
            .expect_err("a worker certificate voting");
        anyhow::ensure!(vote.code() == Code::PermissionDenied, "raft: {vote:?}");
        anyhow::ensure!(vote.message().contains("server certificate"), "{vote:?}");
        audit_line(cluster, &["RaftService/Vote", "allowed=false", "cert=\"worker\""]).await?;
        let mut add_node = tonic::Request::new(pb::AddNodeRequest {
            node_id: 9,
            addr: "127.0.0.1:1".into(),
            ..Default::default()
        });
        add_node
            .metadata_mut()
            .insert("authorization", format!("Bearer {}", security.bootstrap_token).parse()?);
        let denied = pb::cluster_service_client::ClusterServiceClient::new(channel)
            .add_node(add_node)
            .await
            .expect_err("a worker certificate adding a node");
        anyhow::ensure!(denied.code() == Code::PermissionDenied, "admin: {denied:?}");
        audit_line(cluster, &["ClusterService/AddNode", "allowed=false"]).await?;

        // Tokens: missing, viewer writing, worker reading, revoked.
        let no_token = Client::with_options(&servers, options(client_files.clone(), None))?;
        let (code, message) = code_of(
            &no_token
                .list_jobs(Consistency::Linearizable)
                .await
                .expect_err("no token"),
        );
        anyhow::ensure!(code == Some(Code::Unauthenticated), "{message}");
        audit_line(cluster, &["JobService/ListJobs", "Unauthenticated"]).await?;

        let viewer = admin.create_token("dashboard", pb::TokenRole::Viewer, None).await?;
        let viewer_client = Client::with_options(&servers, options(client_files.clone(), Some(&viewer.secret)))?;
        viewer_client.list_jobs(Consistency::Linearizable).await?;
        let (code, message) = code_of(
            &viewer_client
                .create_job(rota_chaos::job_spec("by-viewer"))
                .await
                .expect_err("viewer writes"),
        );
        anyhow::ensure!(code == Some(Code::PermissionDenied), "{message}");
        anyhow::ensure!(message.contains("role viewer"), "{message}");
        audit_line(cluster, &["JobService/CreateJob", "PermissionDenied"]).await?;

        let worker_token = admin.create_token("worker-1", pb::TokenRole::Worker, None).await?;
        let as_worker = Client::with_options(&servers, options(client_files.clone(), Some(&worker_token.secret)))?;
        let (code, message) = code_of(
            &as_worker
                .list_jobs(Consistency::Linearizable)
                .await
                .expect_err("worker reads"),
        );
        anyhow::ensure!(code == Some(Code::PermissionDenied), "{message}");

        let operator = admin.create_token("ci", pb::TokenRole::Operator, None).await?;
        let ci = Client::with_options(&servers, options(client_files.clone(), Some(&operator.secret)))?;
        ci.create_job(rota_chaos::job_spec("by-ci")).await?;
        let id = operator.token.as_ref().map(|t| t.id.clone()).unwrap_or_default();
        admin.revoke_token(&id).await?;
        let (code, message) = code_of(&ci.list_jobs(Consistency::Linearizable).await.expect_err("revoked"));
        anyhow::ensure!(
            code == Some(Code::Unauthenticated) && message.contains("revoked"),
            "{message}"
        );
        let listed = admin.list_tokens().await?;
        anyhow::ensure!(
            listed.iter().any(|t| t.id == id && t.revoked_at.is_some()),
            "tokens: {listed:?}"
        );
        // The leader records the bootstrap token shortly after it is elected.
        wait_for("the bootstrap token's row", Duration::from_secs(20), || async {
            let listed = admin.list_tokens().await.map_err(|e| e.to_string())?;
            Ok(listed.iter().any(|t| t.id == "bootstrap").then_some(()))
        })
        .await?;

        // A worker with its certificate and token registers and runs a job.
        let token_file = creds.path().join("worker.token");
        std::fs::write(&token_file, &worker_token.secret)?;
        let mut settings = WorkerSettings::new("secure-worker", "exec");
        settings.env = security.worker_env(&token_file);
        cluster.start_worker(settings)?;
        let mut spec = rota_chaos::job_spec("secure-run");
        spec.schedule = None;
        spec.task = Some(pb::Task {
            driver: pb::Driver::Exec as i32,
            command: vec!["sh".into(), "-c".into(), "echo over mtls".into()],
            ..Default::default()
        });
        admin.create_job(spec).await?;
        let (run, _) = admin.trigger_run("secure-run", None, Default::default(), false).await?;
        let run = wait_for("the run on the TLS worker to end", Duration::from_secs(60), || async {
            let run = admin
                .get_run(&run.id, Consistency::Linearizable)
                .await
                .map_err(|e| e.to_string())?;
            Ok(run.finished_at.is_some().then_some(run))
        })
        .await?;
        anyhow::ensure!(run.state() == pb::RunState::Succeeded, "{run:?}");

        // Revoking the worker's token closes its open session at once.
        let worker_token_id = worker_token.token.as_ref().map(|t| t.id.clone()).unwrap_or_default();
        admin.revoke_token(&worker_token_id).await?;
        audit_line(cluster, &["worker session closed", "revoked"]).await?;

        // Reload without restart: the servers' CA file gains a second CA;
        // a client of that CA is refused before and accepted after.
        let second = Authority::new("second", Validity::from_now(Duration::from_secs(3600)))?;
        let second_ca = creds.path().join("second-ca.pem");
        std::fs::write(&second_ca, &second.pem.cert)?;
        let second_client = second.issue(Role::Client, &[], Validity::from_now(Duration::from_secs(3600)))?;
        let mut second_files = write_pair(creds.path(), "second-client", &client_files.ca_file, &second_client);
        let newcomer = Client::with_options(&servers, options(second_files.clone(), Some(&security.bootstrap_token)))?;
        newcomer
            .list_jobs(Consistency::Linearizable)
            .await
            .expect_err("a client of the second CA before the reload");
        let bundle = format!("{}{}", std::fs::read_to_string(&client_files.ca_file)?, second.pem.cert);
        let staged = creds.path().join("ca.pem.new");
        std::fs::write(&staged, bundle)?;
        std::fs::rename(&staged, &client_files.ca_file)?;
        // The newcomer trusts the servers' (first) CA.
        second_files.ca_file = client_files.ca_file.clone();
        wait_for(
            "the servers to accept the second CA",
            Duration::from_secs(30),
            || async {
                let newcomer =
                    Client::with_options(&servers, options(second_files.clone(), Some(&security.bootstrap_token)))
                        .map_err(|e| e.to_string())?;
                Ok(newcomer
                    .list_jobs(Consistency::Linearizable)
                    .await
                    .is_ok()
                    .then_some(()))
            },
        )
        .await?;
        // Still the same processes.
        for id in cluster.ids() {
            anyhow::ensure!(cluster.is_running(id), "server {id} restarted");
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refuses_specs_that_ask_for_its_host_unless_its_config_allows_them() {
    if !rota_chaos::docker::ready_or_skip() {
        return;
    }
    let shared = tempfile::tempdir().expect("temp dir");
    std::fs::write(shared.path().join("hello.txt"), "from the host\n").expect("write");
    let mut cluster = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    run_checked(&mut cluster, async |cluster| {
        let mut settings = WorkerSettings::new("guarded", "docker");
        settings.env = vec![
            (
                "ROTA_SECURITY__ALLOW_HOST_PATHS".into(),
                format!("[\"{}\"]", shared.path().display()),
            ),
            ("ROTA_SECURITY__DEFAULT_MEMORY".into(), "96Mi".into()),
            ("ROTA_SECURITY__MAX_MEMORY".into(), "1Gi".into()),
        ];
        cluster.start_worker(settings)?;
        let client = cluster.client()?;
        let job = |name: &str, network_mode: &str, host: pb::HostAccess, script: &str| pb::JobSpec {
            name: name.to_owned(),
            task: Some(pb::Task {
                driver: pb::Driver::Docker as i32,
                image: rota_chaos::docker::TEST_IMAGE.to_owned(),
                pull: pb::PullPolicy::Never as i32,
                command: vec!["sh".into(), "-c".into(), script.to_owned()],
                network_mode: network_mode.to_owned(),
                host: Some(host),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mount = |path: &str| pb::HostAccess {
            mounts: vec![pb::Mount {
                host_path: path.to_owned(),
                container_path: "/m".into(),
                read_only: true,
            }],
            ..Default::default()
        };
        let refused = [
            (
                job(
                    "wants-privileged",
                    "",
                    pb::HostAccess {
                        privileged: true,
                        ..Default::default()
                    },
                    "id",
                ),
                "task.host.privileged is not allowed here",
            ),
            (
                job("wants-host-network", "host", pb::HostAccess::default(), "id"),
                "task.network_mode: host is not allowed here",
            ),
            (
                job("wants-docker-socket", "", mount("/var/run/docker.sock"), "id"),
                "the Docker engine's socket",
            ),
            (
                job("wants-etc", "", mount("/etc"), "cat /m/shadow"),
                "is not under any path of allow_host_paths",
            ),
        ];
        for (spec, reason) in refused {
            let name = spec.name.clone();
            client.create_job(spec).await?;
            let run = run_to_end(&client, &name).await?;
            let message = run.attempts.last().map(|a| a.message.clone()).unwrap_or_default();
            anyhow::ensure!(
                run.state() == pb::RunState::Failed && message.contains(reason) && message.contains("security"),
                "{name}: {:?} {message:?}",
                run.state()
            );
            eprintln!("{name}: {message}");
        }
        // Inside the allow-list: mounted, and read.
        client
            .create_job(job(
                "reads-the-cache",
                "",
                mount(&shared.path().display().to_string()),
                "cat /m/hello.txt",
            ))
            .await?;
        let run = run_to_end(&client, "reads-the-cache").await?;
        anyhow::ensure!(run.state() == pb::RunState::Succeeded, "{run:?}");
        let output = rota_chaos::rotactl(&cluster.servers_arg(), &["run", "logs", &run.id]).await?;
        let text = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(text.contains("from the host"), "output: {text}");

        // A task without a memory limit gets the worker's default (the
        // container's cgroup says so, v2 or v1); one above the cap is refused.
        client
            .create_job(job(
                "no-limit-given",
                "",
                pb::HostAccess::default(),
                "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
            ))
            .await?;
        let run = run_to_end(&client, "no-limit-given").await?;
        let output = rota_chaos::rotactl(&cluster.servers_arg(), &["run", "logs", &run.id]).await?;
        let text = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(text.contains(&(96u64 << 20).to_string()), "the default limit: {text}");
        let mut greedy = job("wants-8gi", "", pb::HostAccess::default(), "id");
        if let Some(task) = greedy.task.as_mut() {
            task.resources = Some(pb::Resources {
                cpu: 0.0,
                memory: "8Gi".into(),
            });
        }
        client.create_job(greedy).await?;
        let run = run_to_end(&client, "wants-8gi").await?;
        let message = run.attempts.last().map(|a| a.message.clone()).unwrap_or_default();
        anyhow::ensure!(
            run.state() == pb::RunState::Failed && message.contains("max_memory"),
            "{message}"
        );
        Ok(())
    })
    .await;
}

/// Every file under `dir` (recursively) that contains `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        } else if std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle)) {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_secret_reaches_its_task_and_nothing_else() {
    let creds = tempfile::tempdir().expect("temp dir");
    let security = Security::create(creds.path()).expect("credentials");
    let canary = format!("canary-{}", rota_client::token::random_hex(12).expect("random"));
    let digest = {
        let digest = ring::digest::digest(&ring::digest::SHA256, canary.as_bytes());
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let mut cluster = Cluster::start(
        3,
        ServerSettings {
            security: Some(security.clone()),
            http: true,
            // Debug logs: the secret must not show up even there.
            env: vec![("RUST_LOG".into(), "info,rota_server=debug".into())],
            ..Default::default()
        },
    )
    .await
    .expect("cluster starts");
    let backup = creds.path().join("cluster.rota");
    run_checked(&mut cluster, async |cluster| {
        let admin = cluster.client()?;
        let worker_token = admin.create_token("canary-worker", pb::TokenRole::Worker, None).await?;
        let token_file = creds.path().join("worker.token");
        std::fs::write(&token_file, &worker_token.secret)?;
        let mut settings = WorkerSettings::new("canary-worker", "exec");
        settings.env = security.worker_env(&token_file);
        settings.env.push(("RUST_LOG".into(), "debug".into()));
        settings.http = true;
        cluster.start_worker(settings)?;

        let spec = pb::JobSpec {
            name: "uses-a-secret".into(),
            task: Some(pb::Task {
                driver: pb::Driver::Exec as i32,
                // Proves the task got the value without printing it.
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    "printf %s \"$DB_PASSWORD\" | sha256sum".into(),
                ],
                secret_env: [("DB_PASSWORD".to_owned(), canary.clone())].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = admin.create_job(spec.clone()).await?;
        let sealed = created
            .spec
            .as_ref()
            .and_then(|s| s.task.as_ref())
            .and_then(|t| t.secret_env.get("DB_PASSWORD"))
            .cloned()
            .unwrap_or_default();
        anyhow::ensure!(sealed.starts_with("sealed:v1:"), "stored as {sealed:?}");
        // Applying the same spec again changes nothing (sealing is stable).
        let applied = admin.apply_job(spec, false).await?;
        anyhow::ensure!(applied.outcome == pb::ApplyOutcome::Unchanged, "{:?}", applied.outcome);
        // The sealed value copied into another job does not open there.
        let thief = pb::JobSpec {
            name: "thief".into(),
            task: Some(pb::Task {
                driver: pb::Driver::Exec as i32,
                command: vec!["sh".into(), "-c".into(), "echo $STOLEN".into()],
                secret_env: [("STOLEN".to_owned(), sealed.clone())].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let refused = admin
            .create_job(thief)
            .await
            .expect_err("a sealed value of another job");
        anyhow::ensure!(
            refused.code() == Some(Code::InvalidArgument) && refused.to_string().contains("another job"),
            "{refused}"
        );

        let run = run_to_end(&admin, "uses-a-secret").await?;
        // rotactl as an admin would run it: servers, certificate, token.
        let client_files = security.files(Role::Client);
        let env_owned = [
            ("ROTA_SERVERS", cluster.servers_arg()),
            ("ROTA_TOKEN", security.bootstrap_token.clone()),
            ("ROTA_TLS_CA", client_files.ca_file.display().to_string()),
            ("ROTA_TLS_CERT", client_files.cert_file.display().to_string()),
            ("ROTA_TLS_KEY", client_files.key_file.display().to_string()),
        ];
        let env: Vec<(&str, &str)> = env_owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        anyhow::ensure!(run.state() == pb::RunState::Succeeded, "{run:?}");
        let logs = rota_chaos::rotactl_with(&env, &["run", "logs", &run.id]).await?;
        let text = String::from_utf8_lossy(&logs.stdout).into_owned();
        anyhow::ensure!(text.contains(&digest), "the task did not get the secret: {text:?}");

        // Every answer of the API and rotactl, every metric, every log, every
        // file of every data directory, and a backup.
        let mut answers = vec![
            format!("{:?}", admin.get_job("uses-a-secret", Consistency::Linearizable).await?),
            format!("{:?}", admin.list_jobs(Consistency::Linearizable).await?),
            format!("{:?}", admin.get_run(&run.id, Consistency::Linearizable).await?),
        ];
        for args in [
            &["job", "get", "uses-a-secret", "-o", "yaml"][..],
            &["job", "get", "uses-a-secret"][..],
            &["run", "get", &run.id, "-o", "json"][..],
            &["cluster", "snapshot", "save", &backup.display().to_string()][..],
        ] {
            let out = rota_chaos::rotactl_with(&env, args).await?;
            anyhow::ensure!(
                out.status.success(),
                "rotactl {args:?}: {}",
                rota_chaos::output_text(&out)
            );
            answers.push(rota_chaos::output_text(&out));
        }
        for id in cluster.ids() {
            if let Some(http) = &cluster.server(id)?.http_addr {
                answers.push(rota_chaos::http_get(http, "/metrics").await?.1);
            }
            answers.push(cluster.server_log(id)?);
        }
        if let Some(http) = cluster.worker("canary-worker")?.http_addr.clone() {
            answers.push(rota_chaos::http_get(&http, "/metrics").await?.1);
        }
        answers.push(cluster.workers_log("canary-worker"));
        for (i, answer) in answers.iter().enumerate() {
            anyhow::ensure!(!answer.contains(&canary), "answer {i} holds the secret: {answer}");
        }
        anyhow::ensure!(
            answers.iter().any(|a| a.contains("sealed:v1:")),
            "no answer shows the sealed value"
        );
        let mut dirs: Vec<std::path::PathBuf> = Vec::new();
        for id in cluster.ids() {
            dirs.push(cluster.server(id)?.data_dir.clone());
        }
        dirs.push(cluster.worker("canary-worker")?.data_dir.clone());
        dirs.push(backup.clone());
        for dir in dirs {
            let found = files_containing(&dir, canary.as_bytes());
            anyhow::ensure!(found.is_empty(), "the secret is in {found:?}");
        }
        anyhow::ensure!(
            !files_containing(&cluster.server(1)?.data_dir, b"sealed:v1:").is_empty(),
            "the data dir does not hold the sealed value at all (is the grep looking?)"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_rate_is_refused_and_others_are_not() {
    let creds = tempfile::tempdir().expect("temp dir");
    let security = Security::create(creds.path()).expect("credentials");
    let mut cluster = Cluster::start(
        3,
        ServerSettings {
            security: Some(security.clone()),
            env: vec![
                ("ROTA_AUTH__REQUESTS_PER_SECOND".into(), "50".into()),
                ("ROTA_AUTH__BURST".into(), "50".into()),
            ],
            ..Default::default()
        },
    )
    .await
    .expect("cluster starts");
    run_checked(&mut cluster, async |cluster| {
        let admin = cluster.client()?;
        let noisy = admin.create_token("noisy", pb::TokenRole::Viewer, None).await?;
        let quiet = admin.create_token("quiet", pb::TokenRole::Viewer, None).await?;
        let one = cluster.addr(1)?;
        let noisy = Client::with_options([&one], options(security.files(Role::Client), Some(&noisy.secret)))?;
        // 300 calls at once: at most the burst plus what refills while they
        // arrive gets through.
        let calls = (0..300).map(|_| noisy.list_jobs(Consistency::Stale));
        let results = futures::future::join_all(calls).await;
        let refused: Vec<&Error> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        anyhow::ensure!(!refused.is_empty(), "300 calls at once were all served");
        for error in &refused {
            let (code, message) = code_of(error);
            anyhow::ensure!(
                code == Some(Code::ResourceExhausted) && message.contains("calls per second"),
                "{message}"
            );
        }
        eprintln!("{} of 300 refused: {}", refused.len(), refused[0]);
        audit_line(cluster, &["JobService/ListJobs", "ResourceExhausted"]).await?;
        let quiet = Client::with_options([&one], options(security.files(Role::Client), Some(&quiet.secret)))?;
        quiet.list_jobs(Consistency::Stale).await?;
        Ok(())
    })
    .await;
}
